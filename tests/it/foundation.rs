//! The foundation works: libtorch links and computes, and `sinkrep env` reports it.

use std::process::Command;

/// libtorch loads and computes: a 2x3 by 3x2 matmul against the result worked by hand.
#[test]
fn libtorch_matmul_known_result() {
    let a = tch::Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).reshape([2, 3]);
    let b = tch::Tensor::from_slice(&[7f32, 8., 9., 10., 11., 12.]).reshape([3, 2]);
    let c = a.matmul(&b);
    let got: Vec<f32> = c.flatten(0, -1).try_into().unwrap();
    assert_eq!(got, vec![58., 64., 139., 154.]);
}

/// `sinkrep env ARGS --json`, run from another directory with no LD_LIBRARY_PATH (the
/// rpath must do its job), as JSON.
fn env_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sinkrep"))
        .arg("env")
        .args(args)
        .arg("--json")
        .current_dir(std::env::temp_dir())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run sinkrep");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

/// `sinkrep env --json` is valid JSON and names the pinned libtorch.
#[test]
fn env_json_names_libtorch_2_13_0() {
    let v = env_json(&[]);
    let lt = v["libtorch_version"].as_str().unwrap();
    assert!(lt.starts_with("2.13.0"), "libtorch_version = {lt}");
    assert!(v["threads"].as_i64().unwrap() >= 1);
    assert!(v["cuda_available"].is_boolean());
    assert!(v["cudnn_available"].is_boolean());
    // From Cargo.lock at build time (the device bundle builds with 0.24.0).
    assert_eq!(v["tch_version"], "0.26.0");
    assert!(v["venv_dir"].as_str().unwrap().ends_with("torch-2.13.0"));
    assert!(v.get("matmul_peak").is_none(), "only with --matmul-peak");
}

/// `sinkrep env --matmul-peak` measures f32 and bf16 rates on the chosen device (tiny
/// matrices here: the path, not the speed); the f32-vs-f64 error is CUDA's alone.
#[test]
fn env_matmul_peak_reports_f32_and_bf16_rates() {
    let v = env_json(&["--matmul-peak", "--device", "cpu", "--matmul-n", "64"]);
    let rates = v["matmul_peak"]["rates"].as_array().expect("rates");
    let dtypes: Vec<&str> = rates.iter().map(|r| r["dtype"].as_str().unwrap()).collect();
    assert_eq!(dtypes, ["f32", "bf16"]);
    for r in rates {
        assert_eq!(r["device"], "cpu");
        assert_eq!(r["n"], 64);
        let (best, median) = (
            r["gflops_best"].as_f64().unwrap(),
            r["gflops_median"].as_f64().unwrap(),
        );
        assert!(best >= median && median > 0.0, "{r}");
    }
    assert!(v["matmul_peak"]["f32_rel_error_vs_f64"].is_null());
}

/// A bad flag is a one-line usage error with a non-zero exit, not a panic.
#[test]
fn bad_flag_is_a_clean_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sinkrep"))
        .args(["env", "--no-such-flag"])
        .output()
        .expect("run sinkrep");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
