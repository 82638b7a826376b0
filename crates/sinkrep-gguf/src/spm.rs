//! SentencePiece-style tokenization from GGUF metadata (`tokenizer.ggml.model = llama`),
//! the way llama.cpp's `llm_tokenizer_spm` does it (`llama-vocab.cpp`):
//!
//! 1. Special pieces (control, user-defined and unknown tokens) written in the text are
//!    cut out first, longest piece first over the whole text, and become their ids.
//! 2. In each remaining fragment every ' ' becomes "▁" (U+2581), with one "▁" prefixed
//!    when `add_space_prefix` and the fragment opens the text or follows a special piece.
//! 3. The fragment starts as one symbol per UTF-8 character. Repeatedly, of all adjacent
//!    pairs whose concatenation is a vocabulary entry, the one whose entry has the highest
//!    score is merged (ties: the leftmost pair), until no pair is in the vocabulary.
//! 4. A final symbol that is not an entry (a character outside the vocabulary) becomes
//!    its UTF-8 bytes as `<0xXX>` byte tokens (byte fallback).
//!
//! The GGUF carries no merges for these vocabularies: the scores are the merge order.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The space marker of SentencePiece pieces.
pub const SPACE: char = '\u{2581}';

/// llama.cpp token types (`llama_token_type`).
pub(crate) const TYPE_UNKNOWN: i32 = 2;
pub(crate) const TYPE_CONTROL: i32 = 3;
pub(crate) const TYPE_USER_DEFINED: i32 = 4;
pub(crate) const TYPE_BYTE: i32 = 6;

/// The vocabulary of a SentencePiece GGUF, ready to tokenize.
#[derive(Debug, Clone)]
pub(crate) struct Spm {
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    /// `<0xXX>` token ids by byte value, where the vocabulary has them.
    byte_ids: [Option<u32>; 256],
    /// Special pieces matched whole in the text, longest first (then by id).
    specials: Vec<(String, u32)>,
    /// The unknown token, used when a byte has no `<0xXX>` token.
    unk_id: Option<u32>,
    /// `tokenizer.ggml.add_space_prefix` (llama.cpp's default for SPM: true).
    add_space_prefix: bool,
}

/// A pair of adjacent symbols whose concatenation is a vocabulary entry.
#[derive(Debug, PartialEq)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// Byte length of the concatenation, to discard pairs whose symbols changed since.
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// The heap's top is the highest score, then the leftmost pair (llama.cpp's
    /// `llm_bigram_spm::comparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One symbol of the linked list being merged: a byte range of the fragment.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// Builds from the token texts, scores and types (all the same length, checked by
    /// the caller).
    pub(crate) fn new(
        tokens: &[String],
        scores: Vec<f32>,
        types: &[i32],
        unk_id: Option<u32>,
        add_space_prefix: bool,
    ) -> Spm {
        let mut ids = HashMap::with_capacity(tokens.len());
        let mut byte_ids = [None; 256];
        let mut specials = Vec::new();
        for (id, (tok, &ty)) in (0u32..).zip(tokens.iter().zip(types)) {
            ids.entry(tok.clone()).or_insert(id);
            match ty {
                TYPE_BYTE => {
                    if let Some(b) = parse_byte_piece(tok) {
                        byte_ids[b as usize] = Some(id);
                    }
                }
                TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN if !tok.is_empty() => {
                    specials.push((tok.clone(), id));
                }
                _ => {}
            }
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Spm {
            ids,
            scores,
            byte_ids,
            specials,
            unk_id,
            add_space_prefix,
        }
    }

    pub(crate) fn piece_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    /// Token ids of `text` (no BOS: the caller adds it).
    pub(crate) fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut prev_special = true;
        for frag in self.partition(text) {
            match frag {
                Fragment::Special(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    let mut s = String::with_capacity(t.len() + 3);
                    if self.add_space_prefix && prev_special {
                        s.push(SPACE);
                    }
                    s.extend(t.chars().map(|c| if c == ' ' { SPACE } else { c }));
                    self.encode_fragment(&s, &mut out);
                    prev_special = false;
                }
            }
        }
        out
    }

    /// Cuts the special pieces out of `text`: for each piece, longest first, every
    /// occurrence in every text fragment left so far (llama.cpp's
    /// `tokenizer_st_partition`).
    fn partition<'t>(&self, text: &'t str) -> Vec<Fragment<'t>> {
        let mut frags = vec![Fragment::Text(text)];
        for (piece, id) in &self.specials {
            if !text.contains(piece.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Fragment::Text(t) if t.contains(piece.as_str()) => {
                        let mut rest = t;
                        while let Some(at) = rest.find(piece.as_str()) {
                            if at > 0 {
                                next.push(Fragment::Text(&rest[..at]));
                            }
                            next.push(Fragment::Special(*id));
                            rest = &rest[at + piece.len()..];
                        }
                        if !rest.is_empty() {
                            next.push(Fragment::Text(rest));
                        }
                    }
                    f => next.push(f),
                }
            }
            frags = next;
        }
        frags
    }

    /// Score-ordered merging of one fragment (already with "▁" for spaces), then byte
    /// fallback for what did not form a token.
    fn encode_fragment(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        if symbols.is_empty() {
            return;
        }
        let mut heap = BinaryHeap::new();
        let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Symbol], l: usize, r: usize| {
            let (a, b) = (syms[l], syms[r]);
            let s = &text[a.start..b.start + b.len];
            if let Some(&id) = self.ids.get(s) {
                heap.push(Bigram {
                    left: l,
                    right: r,
                    score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                    len: s.len(),
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&mut heap, &symbols, i - 1, i);
        }
        while let Some(bg) = heap.pop() {
            let (l, r) = (symbols[bg.left], symbols[bg.right]);
            // Skip pairs one of whose symbols was merged away or grew since.
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.len {
                continue;
            }
            symbols[bg.left].len += r.len;
            symbols[bg.right].len = 0;
            symbols[bg.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(bg.left);
            }
            if let Some(p) = symbols[bg.left].prev {
                try_add(&mut heap, &symbols, p, bg.left);
            }
            if let Some(n) = symbols[bg.left].next {
                try_add(&mut heap, &symbols, bg.left, n);
            }
        }
        let mut i = Some(0);
        while let Some(k) = i {
            let s = symbols[k];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        if let Some(id) = self.byte_ids[b as usize].or(self.unk_id) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }
}

enum Fragment<'t> {
    Text(&'t str),
    Special(u32),
}

/// The byte of a `<0xXX>` piece.
pub(crate) fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
