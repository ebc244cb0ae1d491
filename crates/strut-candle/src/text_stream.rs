//! Turning generated token ids into text pieces: complete UTF-8 only, and
//! never any part of a stop sequence.

use tokenizers::Tokenizer;

/// Incremental detokenizer. Byte-level BPE splits multi-byte characters
/// across tokens, so a token's own decoding can be an incomplete character.
/// Decoding a short window of previous tokens together with the new one and
/// emitting only the growth, once it no longer ends in U+FFFD, gives each
/// character exactly once, with the token that completes it.
pub struct Detokenizer<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl<'a> Detokenizer<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| format!("decoding tokens: {e}"))
    }

    /// The text this token completes; empty while a character is unfinished.
    pub fn step(&mut self, id: u32) -> Result<String, String> {
        self.ids.push(id);
        let before = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let after = self.decode(&self.ids[self.prefix_offset..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            let delta = after.strip_prefix(before.as_str()).map_or_else(
                || after[floor_char_boundary(&after, before.len())..].to_owned(),
                str::to_owned,
            );
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// What is left when generation ends mid-character (lossy by necessity).
    pub fn flush(&mut self) -> Result<String, String> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let before = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let after = self.decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(after.get(before.len()..).unwrap_or_default().to_owned())
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Holds back token texts while they could still be the start of a stop
/// sequence, and cuts the output before the first stop sequence.
/// Each text carries its token's `T` (its id, and whatever else goes out
/// with it) through the filter.
pub struct StopFilter<T = u32> {
    stops: Vec<String>,
    pending: Vec<(T, String)>,
}

pub struct Filtered<T = u32> {
    pub ready: Vec<(T, String)>,
    pub stopped: bool,
}

impl<T> StopFilter<T> {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: Vec::new(),
        }
    }

    pub fn push(&mut self, id: T, text: String) -> Filtered<T> {
        self.pending.push((id, text));
        let joined: String = self.pending.iter().map(|(_, t)| t.as_str()).collect();
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| joined.find(s.as_str()))
            .min();
        if let Some(cut) = first_stop {
            let mut ready = Vec::new();
            let mut start = 0;
            for (id, text) in self.pending.drain(..) {
                if start >= cut {
                    break;
                }
                let keep = (cut - start).min(text.len());
                start += text.len();
                ready.push((id, text[..keep].to_owned()));
            }
            return Filtered {
                ready,
                stopped: true,
            };
        }
        let held = self.longest_stop_prefix_suffix(&joined);
        let safe = joined.len() - held;
        let mut end = 0;
        let mut n = 0;
        for (_, text) in &self.pending {
            if end + text.len() > safe {
                break;
            }
            end += text.len();
            n += 1;
        }
        Filtered {
            ready: self.pending.drain(..n).collect(),
            stopped: false,
        }
    }

    /// Everything held back, once generation ends for another reason.
    pub fn finish(&mut self) -> Vec<(T, String)> {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `text` that begins some stop sequence.
    fn longest_stop_prefix_suffix(&self, text: &str) -> usize {
        self.stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len().min(text.len() + 1))
                    .rev()
                    .filter(|&n| stop.is_char_boundary(n))
                    .find(|&n| text.ends_with(&stop[..n]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: &[(u32, String)]) -> Vec<&str> {
        v.iter().map(|(_, t)| t.as_str()).collect()
    }

    #[test]
    fn stop_sequence_split_across_tokens_is_cut() {
        let mut f = StopFilter::new(vec!["\n\nUser:".into()]);
        assert_eq!(texts(&f.push(1, "Hello".into()).ready), ["Hello"]);
        let r = f.push(2, " there\n".into());
        assert!(
            r.ready.is_empty() && !r.stopped,
            "held while it could start the stop"
        );
        let r = f.push(3, "\nUs".into());
        assert!(r.ready.is_empty());
        let r = f.push(4, "er: hi".into());
        assert!(r.stopped);
        assert_eq!(texts(&r.ready), [" there"]);
    }

    #[test]
    fn held_text_is_released_when_it_stops_matching() {
        let mut f = StopFilter::new(vec!["END".into()]);
        assert!(f.push(1, "the E".into()).ready.is_empty());
        assert_eq!(texts(&f.push(2, "nd".into()).ready), ["the E", "nd"]);
        let mut f = StopFilter::new(vec!["END".into()]);
        assert!(f.push(1, "EN".into()).ready.is_empty());
        assert_eq!(texts(&f.push(2, "ormous".into()).ready), ["EN", "ormous"]);
        assert!(f.finish().is_empty());
    }

    #[test]
    fn no_stops_passes_everything_through() {
        let mut f = StopFilter::new(Vec::new());
        assert_eq!(texts(&f.push(1, "a".into()).ready), ["a"]);
    }
}
