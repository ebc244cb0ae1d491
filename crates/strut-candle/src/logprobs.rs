//! OpenAI's `logprobs`: a generated token's log-probability and the most
//! likely alternatives at its step, from the model's raw logits (before
//! temperature, penalties and masks, as vLLM reports by default), with each
//! token's text and exact bytes.

use strut_model::capabilities::{TokenLogprob, TokenText};
use tokenizers::Tokenizer;

/// One step's distribution, read before the sampler changes the logits.
pub struct StepLogprobs {
    log_z: f64,
    /// The most likely tokens and their raw logits, best first.
    top: Vec<(u32, f32)>,
    logits: Vec<f32>,
}

impl StepLogprobs {
    pub fn new(logits: &[f32], top: usize) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        // Insertion into a short sorted list: top <= 20, and almost every
        // logit is below the list's last and costs one comparison.
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
        if top > 0 {
            for (id, &l) in logits.iter().enumerate() {
                if best.len() == top && best[top - 1].1 >= l {
                    continue;
                }
                let at = best.partition_point(|&(_, b)| b >= l);
                best.insert(at, (id as u32, l));
                best.truncate(top);
            }
        }
        Self {
            log_z: f64::from(max) + sum.ln(),
            top: best,
            logits: logits.to_vec(),
        }
    }

    fn logprob(&self, logit: f32) -> f32 {
        (f64::from(logit) - self.log_z) as f32
    }

    /// The report for the token that was chosen.
    pub fn report(&self, chosen: u32, tokenizer: &Tokenizer) -> TokenLogprob {
        TokenLogprob {
            token: token_text(tokenizer, chosen),
            logprob: self.logprob(
                self.logits
                    .get(chosen as usize)
                    .copied()
                    .unwrap_or(f32::NEG_INFINITY),
            ),
            top: self
                .top
                .iter()
                .map(|&(id, l)| (token_text(tokenizer, id), self.logprob(l)))
                .collect(),
        }
    }
}

/// A vocabulary entry's bytes: byte-level BPE vocabularies (GPT-2's, and
/// every GGUF `gpt2` tokenizer) spell each byte as one character; others
/// are read through the tokenizer's decoder.
pub fn token_text(tokenizer: &Tokenizer, id: u32) -> TokenText {
    if let Some(bytes) = tokenizer
        .id_to_token(id)
        .and_then(|piece| piece.chars().map(byte_of).collect::<Option<Vec<u8>>>())
    {
        return TokenText {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
        };
    }
    let text = tokenizer.decode(&[id], false).unwrap_or_default();
    TokenText {
        bytes: text.as_bytes().to_vec(),
        text,
    }
}

/// GPT-2's byte-to-character table, inverted: printable Latin-1 bytes stand
/// for themselves; the other 68 bytes are U+0100 onwards, in byte order.
fn byte_of(c: char) -> Option<u8> {
    let printable = |b: u32| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    let cp = c as u32;
    if cp < 256 {
        return printable(cp).then_some(cp as u8);
    }
    let n = usize::try_from(cp.checked_sub(256)?).ok()?;
    (0u32..256)
        .filter(|&b| !printable(b))
        .nth(n)
        .map(|b| b as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_and_the_top_is_sorted() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let step = StepLogprobs::new(&logits, 3);
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let want = |l: f32| (f64::from(l) - z.ln()) as f32;
        assert!((step.logprob(logits[2]) - want(2.0)).abs() < 1e-6);
        let ids: Vec<u32> = step.top.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids[..2].contains(&1) && ids[..2].contains(&3), "{ids:?}");
        assert_eq!(ids[2], 2);
        assert!(StepLogprobs::new(&logits, 0).top.is_empty());
    }

    #[test]
    fn byte_level_characters_map_back_to_bytes() {
        assert_eq!(byte_of('a'), Some(b'a'));
        assert_eq!(byte_of('Ġ'), Some(b' '));
        assert_eq!(byte_of('Ċ'), Some(b'\n'));
        assert_eq!(byte_of('Ā'), Some(0));
        assert_eq!(byte_of('▁'), None);
    }
}
