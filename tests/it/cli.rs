//! The `sinkrep analyze` / `intervene` commands, end to end.

use std::process::Command;

fn sinkrep(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sinkrep"))
        .args(args)
        .output()
        .expect("run sinkrep")
}

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
