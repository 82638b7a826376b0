// Token ids from llama.cpp itself for a JSON list of texts: the reference for
// sinkrep-gguf's SentencePiece tokenizer (crates/sinkrep-gguf/tests/data/
// gemma3_tokenizer_llama_cpp.jsonl.gz). Not a project dependency.
//
//   npm install node-llama-cpp@3.22.1        (prebuilt llama.cpp; vocab-only load, no GPU)
//   node gemma_tokenize_llama_cpp.mjs MODEL.gguf TEXTS.json OUT.json
//
// Texts from scripts/peers/gemma_tokenizer_texts.py. Special tokens written in the text are
// parsed (tokenize(text, true)); no BOS is added. Note: llama.cpp overrides the type of
// Gemma's `</s>` (id 212, user-defined) to control, which changes nothing here: both types
// are matched whole in the text.
import {getLlama} from "node-llama-cpp";
import fs from "fs";
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath: process.argv[2], vocabOnly: true});
const texts = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const out = texts.map(t => Array.from(model.tokenize(t, true)));
fs.writeFileSync(process.argv[4], JSON.stringify(out));
console.log("bos", model.tokens.bos, "n", out.length);
