//! By-hand timing check (not a test): open a GGUF and de-quantise every tensor.
//!
//! `cargo run --release -p sinkrep-gguf --example dequant_timing -- [PATH]`
//! (default: `$SINKREP_GGUF`, else the pinned SmolLM2 file under `~/.cache`).

use std::path::PathBuf;
use std::time::Instant;

use sinkrep_gguf::GgufFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("SINKREP_GGUF"))
    {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/sinkrep/inputs/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    let t0 = Instant::now();
    let file = GgufFile::open(&path)?;
    let t_open = t0.elapsed();
    let t1 = Instant::now();
    let mut n_values = 0usize;
    for info in file.tensors() {
        n_values += file.tensor_f32(&info.name)?.len();
    }
    let t_dequant = t1.elapsed();
    println!(
        "{}: {} bytes, {} tensors, {n_values} values; open {:.3} s, de-quantise all {:.3} s, total {:.3} s ({} rayon threads)",
        path.display(),
        file.as_bytes().len(),
        file.tensors().len(),
        t_open.as_secs_f64(),
        t_dequant.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        rayon::current_num_threads(),
    );
    Ok(())
}
