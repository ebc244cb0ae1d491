//! The prefix cache: KV caches of finished sequences, kept so that a new
//! prompt sharing a prefix with one of them (a system prompt, the earlier
//! turns of a chat) starts from a copy of those positions instead of
//! computing them again. A prompt enters the cache as soon as it is
//! prefilled (a copy of its positions), so requests that arrive while it
//! still generates share it; the whole sequence replaces that entry when it
//! ends.
//!
//! A lookup finds the entry with the longest common token prefix, as a
//! radix tree would, by comparing the prompt with each entry: entries are
//! few (bounded by `MAX_ENTRIES`) and a comparison stops at the first
//! differing token, so the scan costs microseconds next to the prefill it
//! saves. Entries that are a prefix of a newer one are
//! dropped, so a growing chat keeps one entry. Memory is the scheduler's KV
//! budget: entries only fill what running sequences leave, and the least
//! recently used goes first when a sequence needs the room.

use crate::llama::KvCache;

/// Entries at most; beyond, the least recently used goes.
const MAX_ENTRIES: usize = 64;
/// Shorter sequences are not worth an entry.
const MIN_TOKENS: usize = 16;

struct Entry {
    tokens: Vec<u32>,
    cache: KvCache,
    last_used: u64,
}

#[derive(Default)]
pub struct PrefixCache {
    entries: Vec<Entry>,
    tokens: usize,
    clock: u64,
}

impl PrefixCache {
    /// KV positions held.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The cached sequence sharing the longest prefix with `prompt`, and the
    /// length of that prefix (0: none).
    pub fn lookup(&mut self, prompt: &[u32]) -> Option<(&KvCache, usize)> {
        let (best, len) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .max_by_key(|&(i, len)| (len, self.entries[i].last_used))?;
        if len == 0 {
            return None;
        }
        self.clock += 1;
        let entry = &mut self.entries[best];
        entry.last_used = self.clock;
        Some((&entry.cache, len))
    }

    /// Whether an entry holds all of `tokens` already.
    pub fn covers(&self, tokens: &[u32]) -> bool {
        self.entries.iter().any(|e| e.tokens.starts_with(tokens))
    }

    /// Keeps the first `tokens.len()` positions of `cache` (a sequence that
    /// ended, or a prompt just prefilled) for later prompts.
    pub fn insert(&mut self, tokens: Vec<u32>, cache: KvCache) {
        if tokens.len() < MIN_TOKENS || cache.len() < tokens.len() {
            return;
        }
        self.clock += 1;
        // Already covered by a longer entry: only its age changes.
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.tokens.starts_with(&tokens))
        {
            e.last_used = self.clock;
            return;
        }
        let before = self.entries.len();
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        if self.entries.len() != before {
            self.recount();
        }
        self.tokens += tokens.len();
        self.entries.push(Entry {
            tokens,
            cache,
            last_used: self.clock,
        });
        while self.entries.len() > MAX_ENTRIES {
            self.evict();
        }
    }

    /// Drops the least recently used entry; false when there is none.
    pub fn evict(&mut self) -> bool {
        let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_used)
        else {
            return false;
        };
        let entry = self.entries.swap_remove(oldest);
        self.tokens -= entry.tokens.len();
        true
    }

    fn recount(&mut self) {
        self.tokens = self.entries.iter().map(|e| e.tokens.len()).sum();
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(len: usize) -> KvCache {
        let mut c = KvCache::default();
        c.set_len_for_test(len);
        c
    }

    fn seq(prefix: u32, len: usize) -> Vec<u32> {
        (0..len as u32).map(|i| prefix * 1000 + i).collect()
    }

    #[test]
    fn the_longest_shared_prefix_is_found_and_the_oldest_evicted() {
        let mut pc = PrefixCache::default();
        let a = seq(1, 40);
        let b = seq(2, 30);
        pc.insert(a.clone(), cache(40));
        pc.insert(b.clone(), cache(30));
        assert_eq!(pc.tokens(), 70);
        let mut prompt = a[..25].to_vec();
        prompt.extend([7, 7, 7]);
        assert_eq!(pc.lookup(&prompt).map(|(_, n)| n), Some(25));
        assert!(pc.lookup(&[9, 9]).is_none());
        // `a` was used last, so `b` goes first.
        assert!(pc.evict());
        assert_eq!(pc.tokens(), 40);
        assert_eq!(pc.lookup(&b).map(|(_, n)| n), None);
        assert_eq!(pc.lookup(&a).map(|(_, n)| n), Some(40));
        assert!(pc.evict());
        assert!(!pc.evict());
        assert_eq!(pc.tokens(), 0);
    }

    #[test]
    fn a_growing_conversation_keeps_one_entry() {
        let mut pc = PrefixCache::default();
        let turn1 = seq(3, 20);
        let mut turn2 = turn1.clone();
        turn2.extend(seq(4, 20));
        pc.insert(turn1.clone(), cache(20));
        pc.insert(turn2.clone(), cache(40));
        assert_eq!(pc.tokens(), 40);
        // A prefix of what is held adds nothing.
        pc.insert(turn1, cache(20));
        assert_eq!(pc.tokens(), 40);
        // Too short to keep.
        pc.insert(seq(5, 4), cache(4));
        assert_eq!(pc.tokens(), 40);
    }
}
