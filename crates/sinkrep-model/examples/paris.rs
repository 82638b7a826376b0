//! Loads the pinned SmolLM2 GGUF and prints the top next tokens after a prompt.
//! `cargo run --release -p sinkrep-model --example paris -- PATH "text"`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: paris GGUF [TEXT]")?;
    let text = args
        .get(2)
        .map(String::as_str)
        .unwrap_or("The capital of France is");
    let t0 = std::time::Instant::now();
    let file = sinkrep_model::GgufFile::open(path)?;
    let t1 = t0.elapsed();
    let model = sinkrep_model::Model::from_gguf(&file, tch::Device::Cpu)?;
    let tok = sinkrep_model::GgufTokenizer::from_gguf(&file)?;
    eprintln!("read {:?}, ready {:?}", t1, t0.elapsed());
    let ids: Vec<i64> = tok.encode(text)?.iter().map(|&i| i as i64).collect();
    eprintln!("ids {ids:?}");
    let x = tch::Tensor::from_slice(&ids).unsqueeze(0);
    let h = tch::no_grad(|| model.forward(&x, &mut sinkrep_model::Hooks::new()))?;
    let logits = model.logits(&h.select(1, -1)).squeeze();
    let (v, i) = logits.topk(5, -1, true, true);
    let v: Vec<f32> = v.try_into()?;
    let i: Vec<i64> = i.try_into()?;
    for (v, i) in v.iter().zip(&i) {
        println!("{i} {:?} {v:.4}", tok.token_text(*i as u32)?);
    }
    let l: Vec<f32> = logits.narrow(0, 0, 8).try_into()?;
    println!("first logits {l:?}");
    Ok(())
}
