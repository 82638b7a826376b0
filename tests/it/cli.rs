//! The `sinkrep analyze` / `intervene` commands, end to end.

use crate::sinkrep;

/// A truncated model file is a one-line error with a non-zero exit, not a panic.
#[test]
fn truncated_model_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00\x05").unwrap();
    let out = sinkrep(&["analyze", "--model", p.to_str().unwrap(), "--text", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.gguf") && !err.contains("panicked"),
        "{err}"
    );
}

/// The JSON report carries the documented fields, and shows the first-token sink.
#[test]
fn analyze_json_report_on_smollm2() {
    let Some(model) = crate::pinned_model() else {
        return;
    };
    let report = |extra: &[&str]| -> serde_json::Value {
        let text = "The capital of France is";
        let mut args = vec![
            "analyze",
            "--model",
            model.to_str().unwrap(),
            "--text",
            text,
        ];
        args.extend_from_slice(extra);
        args.push("--json");
        let out = sinkrep(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = report(&[]);
    assert_eq!(v["next_token"]["text"], " Paris");
    assert_eq!(v["n_tokens"], 5);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30);
    for key in [
        "layer",
        "attn_mass",
        "sink_frac",
        "agg_var_ratio",
        "dom_ratio",
        "max_abs_sink",
        "max_abs_others",
        "top_ffn_channels",
    ] {
        assert!(layers[3].get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["sink_metric"]["eps"], 0.3);
    // The first token is a sink in most layers.
    assert!(v["sink_metric"]["value"].as_f64().unwrap() > 50.0);
    let sn = v["super_neurons"].as_array().unwrap();
    assert!(!sn.is_empty());
    assert!(sn[0]["top2_energy_share"].as_f64().unwrap() <= 1.0);
    assert!(
        v.get("precision").is_none(),
        "f32 reports carry no precision field"
    );

    // bf16 matmuls: the report says so, and tells the same story (same next token, same
    // super neurons, sink metric within 2 points).
    let b = report(&["--precision", "bf16"]);
    assert_eq!(b["precision"], "bf16");
    assert_eq!(b["next_token"]["text"], " Paris");
    let metric = |r: &serde_json::Value| r["sink_metric"]["value"].as_f64().unwrap();
    assert!(
        (metric(&b) - metric(&v)).abs() < 2.0,
        "{} vs {}",
        metric(&b),
        metric(&v)
    );
    let ids = |r: &serde_json::Value| -> Vec<(u64, u64)> {
        r["super_neurons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["layer"].as_u64().unwrap(), s["channel"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(ids(&b), ids(&v));
}

/// An unknown precision is a usage error naming the choices.
#[test]
fn analyze_rejects_unknown_precision() {
    let out = sinkrep(&["analyze", "--text", "hi", "--precision", "fp8"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fp8") && err.contains("bf16"), "{err}");
}

/// Bad intervention arguments are usage errors naming the problem.
#[test]
fn intervene_rejects_bad_specs() {
    let out = sinkrep(&["intervene", "--text", "hi", "--ablate", "3-7"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(!err.contains("panicked"), "{err}");
    let out = sinkrep(&["intervene", "--text", "hi", "--amplify", "2"]);
    assert_eq!(out.status.code(), Some(2), "--amplify without --layers");
}

/// Out-of-range numbers are refused before the model loads, with one line naming the
/// flag (`--eps 2` used to run and print a report).
#[test]
fn out_of_range_flags_are_refused_in_one_line() {
    let cases: [(&[&str], &str); 8] = [
        (
            &["analyze", "--text", "hi", "--eps", "2"],
            "--eps must be in (0, 1)",
        ),
        (
            &["analyze", "--text", "hi", "--eps", "0"],
            "--eps must be in (0, 1)",
        ),
        (
            &["analyze", "--text", "hi", "--eps", "NaN"],
            "--eps must be in (0, 1)",
        ),
        (
            &["analyze", "--text", "hi", "--batch", "0"],
            "--batch must be at least 1",
        ),
        (&["analyze", "--random", "0"], "--random must be at least 1"),
        (
            &["analyze", "--random", "3", "--seq-len", "0"],
            "--seq-len must be at least 1",
        ),
        (
            &[
                "analyze",
                "--random",
                "3",
                "--seq-len",
                "8",
                "--sink-pos",
                "8",
            ],
            "--sink-pos 8 is outside the 8-token sequences",
        ),
        (
            &[
                "intervene",
                "--text",
                "hi",
                "--amplify",
                "inf",
                "--layers",
                "0",
            ],
            "--amplify must be a finite number",
        ),
    ];
    for (args, want) in cases {
        let out = sinkrep(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = sinkrep(&["analyze", "--model", "no-such-model", "--text", "hi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "no such file or folder, and not a pinned model (aliases: smollm2-135m, gemma3-270m)"
        ),
        "{err}"
    );
}

/// Gemma-3 by its alias: the BOS sink at 0 and the first text token's column beside it,
/// the post-norm sites named, a sensible next token.
#[test]
fn analyze_gemma_by_alias() {
    if crate::gemma_model().is_none() {
        return;
    }
    let out = sinkrep(&[
        "analyze",
        "--model",
        "gemma3-270m",
        "--text",
        "The capital of France is",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n_tokens"], 6, "BOS + 5 text tokens");
    assert_eq!(v["layers"].as_array().unwrap().len(), 18);
    assert_eq!(v["compare_sink_metric"]["pos"], 1);
    assert_eq!(v["layers"][0]["compare"]["pos"], 1);
    let notes = v["site_notes"].as_array().unwrap();
    assert!(notes
        .iter()
        .any(|n| n.as_str().unwrap().contains("post_attention_norm")));
    // HF transformers' top-3 on this GGUF: " the", " a", " Paris".
    let top: Vec<i64> = v["last_logits_top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_i64().unwrap())
        .collect();
    assert_eq!(&top[..3], [506, 496, 9079]);
    assert_eq!(v["next_token"]["text"], " the");
    // The table names both columns.
    let out = sinkrep(&["analyze", "--model", "gemma3-270m", "--text", "Hello there"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("K = 0 is the BOS"), "{table}");
    assert!(table.contains("mass@1"), "{table}");
}

/// The same analysis with 1 and with 2 libtorch threads gives the same bytes, also for
/// products with few rows (8 x 16 tokens: MKL splits their inner dimension across threads
/// unless in its strict reproducible mode, `sinkrep_model::blas`), in f32 and in bf16
/// (whose f32 prefix pass has 16 rows).
#[test]
fn analysis_bytes_do_not_depend_on_the_thread_count() {
    let Some(model) = crate::pinned_model() else {
        return;
    };
    let run = |threads: &str, precision: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sinkrep"))
            .args(["analyze", "--model", model.to_str().unwrap()])
            .args(["--random", "8", "--seq-len", "16", "--seed", "3", "--json"])
            .args(["--precision", precision])
            .env("OMP_NUM_THREADS", threads)
            .env("MKL_NUM_THREADS", threads)
            .env_remove("MKL_CBWR")
            .output()
            .expect("run sinkrep");
        assert!(out.status.success(), "{}", crate::stderr(&out));
        out.stdout
    };
    for precision in ["f32", "bf16"] {
        let (one, two) = (run("1", precision), run("2", precision));
        assert!(!one.is_empty());
        assert!(
            one == two,
            "{precision}: 1 and 2 threads give different reports"
        );
    }
}

/// `--timing` adds one load line and one analysis line to stderr, in the form `just
/// bench-compare` parses, and changes nothing on stdout.
#[test]
fn timing_lines_go_to_stderr_and_leave_the_report_alone() {
    let Some(model) = crate::pinned_model() else {
        return;
    };
    let run = |extra: &[&str]| {
        let mut args = vec!["analyze", "--model", model.to_str().unwrap()];
        args.extend_from_slice(&["--random", "3", "--seq-len", "8", "--seed", "1", "--json"]);
        args.extend_from_slice(extra);
        let out = sinkrep(&args);
        assert!(out.status.success(), "{}", crate::stderr(&out));
        out
    };
    let (plain, timed) = (run(&[]), run(&["--timing"]));
    assert_eq!(plain.stdout, timed.stdout);
    let err = String::from_utf8_lossy(&timed.stderr);
    let seconds = |prefix: &str| -> (f64, f64) {
        let line = err
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {err}"));
        // `<prefix>: W s (cpu C s)`
        let rest = line.rsplit_once(": ").unwrap().1;
        let (w, c) = rest.split_once("s (cpu ").unwrap();
        (
            w.parse().unwrap(),
            c.trim_end_matches("s)").parse().unwrap(),
        )
    };
    let (lw, lc) = seconds("sinkrep: load");
    let (aw, ac) = seconds("sinkrep: analysis of 3x8 tokens");
    for v in [lw, lc, aw, ac] {
        assert!(v.is_finite() && v >= 0.0, "{err}");
    }
    assert!(lw > 0.0 && aw > 0.0, "{err}");
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("sinkrep: analysis"));
}
