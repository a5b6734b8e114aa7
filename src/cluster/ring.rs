//! The hash ring: which shard owns a key.
//!
//! Each shard owns a set of tokens (virtual nodes) on a 64-bit circle. A key's token is the
//! xxh3 hash of its encoded primary key ([`crate::storage::keycode::token`]), and the key belongs
//! to the shard of the first ring token at or after it, wrapping around. So ring token `b` with
//! predecessor `a` owns the range `(a, b]`.
//!
//! Tokens are **allocated, not drawn at random**. A shard that joins takes its share, `1/(S+1)`
//! of the circle for `S` existing shards of equal share, in equal parts from every existing shard:
//! from each one it cuts pieces off the front of that shard's largest ranges. Every new token
//! lies inside an existing range and takes only the part of it before the token, so keys move
//! only to the new shard and the movement is the minimum possible. Shares stay even: the
//! spread is close to zero, where random tokens would give about `1/sqrt(V)`.
//!
//! The ring is a pure value: it does no I/O, and the same ring gives the same owner for the same
//! token on every node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A shard id.
pub type ShardId = u32;

/// 2^64, the size of the circle, as u128.
const CIRCLE: u128 = 1 << 64;

/// The ring: tokens in increasing order with their owners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    tokens: BTreeMap<u64, ShardId>,
}

impl Ring {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no shard owns anything.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The shards on the ring.
    pub fn shards(&self) -> Vec<ShardId> {
        let mut s: Vec<ShardId> = self.tokens.values().copied().collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// The tokens of a shard.
    pub fn tokens_of(&self, shard: ShardId) -> Vec<u64> {
        self.tokens
            .iter()
            .filter(|(_, s)| **s == shard)
            .map(|(t, _)| *t)
            .collect()
    }

    /// The shard that owns `token`.
    pub fn owner(&self, token: u64) -> Option<ShardId> {
        self.tokens
            .range(token..)
            .next()
            .or_else(|| self.tokens.iter().next())
            .map(|(_, s)| *s)
    }

    /// Each range `(start, end]` with its owner, as (start exclusive, end inclusive, length).
    fn ranges(&self) -> Vec<(u64, u64, u128, ShardId)> {
        let mut out = Vec::with_capacity(self.tokens.len());
        let Some((&last, _)) = self.tokens.iter().next_back() else {
            return out;
        };
        let mut prev = last;
        for (&t, &s) in &self.tokens {
            let len = if self.tokens.len() == 1 {
                CIRCLE
            } else {
                (t.wrapping_sub(prev)) as u128
            };
            out.push((prev, t, len, s));
            prev = t;
        }
        out
    }

    /// The share of the circle each shard owns (0–1), for every shard on the ring.
    pub fn shares(&self) -> BTreeMap<ShardId, f64> {
        let mut shares = BTreeMap::new();
        for (_, _, len, s) in self.ranges() {
            *shares.entry(s).or_insert(0.0) += len as f64 / CIRCLE as f64;
        }
        shares
    }

    /// Adds a shard with `vnodes` tokens (at least 1), taking an equal part from every shard.
    /// Adding a shard that is already on the ring changes nothing.
    pub fn add_shard(&mut self, shard: ShardId, vnodes: u32) {
        let mut alloc = Allocator::new(std::mem::take(self));
        alloc.add_shard(shard, vnodes);
        *self = alloc.into_ring();
    }

    /// A ring with `shards` added one after the other, each with `vnodes` tokens: the same
    /// ring as calling [`Ring::add_shard`] for each in turn, in time that grows with the number
    /// of tokens rather than with its square (a 2,000-shard ring is built in well under a
    /// second).
    pub fn with_shards(shards: impl IntoIterator<Item = ShardId>, vnodes: u32) -> Self {
        let mut alloc = Allocator::new(Ring::new());
        for shard in shards {
            alloc.add_shard(shard, vnodes);
        }
        alloc.into_ring()
    }

    /// How many tokens each shard on the ring has, in one pass over the ring.
    pub fn token_counts(&self) -> BTreeMap<ShardId, usize> {
        let mut counts = BTreeMap::new();
        for s in self.tokens.values() {
            *counts.entry(*s).or_insert(0) += 1;
        }
        counts
    }

    /// Removes a shard; its ranges go to the next token clockwise.
    pub fn remove_shard(&mut self, shard: ShardId) {
        self.tokens.retain(|_, s| *s != shard);
    }

    /// The number of tokens on the ring.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
}

/// A range of the ring as the allocator indexes it: largest first, then by end token, the
/// order in which a shard gives pieces away. `(Reverse(len), end, start)`.
type RangeKey = (std::cmp::Reverse<u128>, u64, u64);

/// The ring with an index kept up to date as shards are added: each shard's ranges in the
/// order it gives them away, and its total share. Adding a shard then touches only the ranges
/// it cuts (`vnodes` of them), instead of recomputing every range of the ring for every
/// shard, which made building the ring of an `S`-shard cluster grow as `S³`.
struct Allocator {
    ring: Ring,
    /// Per shard: its ranges `(start, end]`, largest first.
    ranges: BTreeMap<ShardId, std::collections::BTreeSet<RangeKey>>,
    /// Per shard: the sum of its range lengths.
    totals: BTreeMap<ShardId, u128>,
}

impl Allocator {
    /// Indexes `ring` (one pass over its ranges).
    fn new(ring: Ring) -> Self {
        let mut ranges: BTreeMap<ShardId, std::collections::BTreeSet<RangeKey>> = BTreeMap::new();
        let mut totals: BTreeMap<ShardId, u128> = BTreeMap::new();
        for (start, end, len, s) in ring.ranges() {
            ranges
                .entry(s)
                .or_default()
                .insert((std::cmp::Reverse(len), end, start));
            *totals.entry(s).or_insert(0) += len;
        }
        Self {
            ring,
            ranges,
            totals,
        }
    }

    fn into_ring(self) -> Ring {
        self.ring
    }

    fn add_range(&mut self, shard: ShardId, start: u64, end: u64, len: u128) {
        self.ranges
            .entry(shard)
            .or_default()
            .insert((std::cmp::Reverse(len), end, start));
        *self.totals.entry(shard).or_insert(0) += len;
    }

    /// [`Ring::add_shard`]: a shard that joins takes `1/(S+1)` of the circle, an equal part
    /// from each of the `S` shards, cut off the front of their largest ranges.
    fn add_shard(&mut self, shard: ShardId, vnodes: u32) {
        let vnodes = vnodes.max(1) as u128;
        if self.ranges.contains_key(&shard) {
            return;
        }
        if self.ring.tokens.is_empty() {
            // Evenly spaced, offset by half a step so no token sits at 0.
            let step = CIRCLE / vnodes;
            for i in 0..vnodes {
                self.ring.tokens.insert((step * i + step / 2) as u64, shard);
            }
            *self = Allocator::new(std::mem::take(&mut self.ring));
            return;
        }
        let n = self.ranges.len() as u128;
        // Every cut is decided on the ring as it was before this shard: the cuts of one shard
        // never touch another's ranges, so they are applied together at the end.
        let mut cuts: Vec<(ShardId, RangeKey, u128)> = Vec::new();
        // Tokens per existing shard: an equal split of `vnodes`, remainders to the lowest ids.
        // With more shards than `vnodes`, only the first `vnodes` shards give one each.
        let givers = n.min(vnodes) as usize;
        for (i, (&s, own)) in self.ranges.iter().take(givers).enumerate() {
            let k = vnodes / n + u128::from((i as u128) < vnodes % n);
            let Some(&total) = self.totals.get(&s) else {
                continue;
            };
            // This shard gives up total/(n+1) of the circle, in k pieces cut off the front of
            // its largest ranges.
            let mut to_give = total / (n + 1);
            let pieces = k.min(own.len() as u128).max(1);
            for (j, key) in own.iter().take(pieces as usize).enumerate() {
                let len = key.0 .0;
                let left = pieces - j as u128;
                let take = (to_give / left).min(len.saturating_sub(1));
                if take == 0 {
                    continue;
                }
                to_give -= take;
                cuts.push((s, *key, take));
            }
        }
        for (s, key, take) in cuts {
            let (std::cmp::Reverse(len), end, start) = key;
            let token = ((start as u128 + take) % CIRCLE) as u64;
            if self.ring.tokens.contains_key(&token) {
                continue;
            }
            self.ring.tokens.insert(token, shard);
            // (start, end] becomes (start, token] of the new shard and (token, end] of `s`.
            if let Some(own) = self.ranges.get_mut(&s) {
                own.remove(&key);
            }
            if let Some(t) = self.totals.get_mut(&s) {
                *t -= len;
            }
            self.add_range(s, token, end, len - take);
            self.add_range(shard, start, token, take);
        }
    }
}

/// The spread of shares: the largest share divided by the mean, minus one (0 is perfectly even).
pub fn spread(shares: &BTreeMap<ShardId, f64>) -> f64 {
    if shares.is_empty() {
        return 0.0;
    }
    let mean = shares.values().sum::<f64>() / shares.len() as f64;
    let max = shares.values().cloned().fold(0.0, f64::max);
    max / mean - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::keycode::{encode_values, token};
    use crate::types::value::Value;
    use proptest::prelude::*;

    fn ring(shards: u32, vnodes: u32) -> Ring {
        let mut r = Ring::new();
        for s in 1..=shards {
            r.add_shard(s, vnodes);
        }
        r
    }

    #[test]
    fn a_single_shard_owns_everything() {
        let r = ring(1, 16);
        assert_eq!(r.owner(0), Some(1));
        assert_eq!(r.owner(u64::MAX), Some(1));
        assert!((r.shares()[&1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn shares_stay_within_five_percent_of_the_mean_for_1_to_32_shards() {
        let mut r = Ring::new();
        for s in 1..=32 {
            r.add_shard(s, 128);
            let shares = r.shares();
            assert_eq!(shares.len(), s as usize);
            let sp = spread(&shares);
            assert!(sp <= 0.05, "spread {sp:.4} with {s} shards");
            let total: f64 = shares.values().sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn key_shares_follow_ring_shares() {
        let r = ring(3, 128);
        let mut counts = BTreeMap::new();
        for k in 0..30_000i64 {
            let owner = r.owner(token(&encode_values(&[Value::Int(k)]))).unwrap();
            *counts.entry(owner).or_insert(0u32) += 1;
        }
        for (_, c) in counts {
            let share = c as f64 / 30_000.0;
            assert!((share - 1.0 / 3.0).abs() < 0.03, "share {share}");
        }
    }

    /// The allocation as first written: every range of the ring recomputed, for every shard,
    /// on every addition. Slow (`S³` for a ring of `S` shards) but plainly right; the
    /// allocator must give exactly its tokens.
    fn reference_add_shard(ring: &mut Ring, shard: ShardId, vnodes: u32) {
        let vnodes = vnodes.max(1) as u128;
        if ring.tokens.values().any(|s| *s == shard) {
            return;
        }
        if ring.tokens.is_empty() {
            let step = CIRCLE / vnodes;
            for i in 0..vnodes {
                ring.tokens.insert((step * i + step / 2) as u64, shard);
            }
            return;
        }
        let existing = ring.shards();
        let n = existing.len() as u128;
        let ranges = ring.ranges();
        let mut new_tokens = Vec::new();
        for (i, &s) in existing.iter().enumerate() {
            let k = vnodes / n + u128::from((i as u128) < vnodes % n);
            if k == 0 {
                continue;
            }
            let mut own: Vec<(u64, u64, u128)> = ranges
                .iter()
                .filter(|r| r.3 == s)
                .map(|r| (r.0, r.1, r.2))
                .collect();
            let total: u128 = own.iter().map(|r| r.2).sum();
            let mut to_give = total / (n + 1);
            own.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)));
            let pieces = k.min(own.len() as u128).max(1);
            for (j, (start, _end, len)) in own.iter().take(pieces as usize).enumerate() {
                let left = pieces - j as u128;
                let take = (to_give / left).min(len.saturating_sub(1));
                if take == 0 {
                    continue;
                }
                to_give -= take;
                new_tokens.push(((*start as u128 + take) % CIRCLE) as u64);
            }
        }
        for t in new_tokens {
            ring.tokens.entry(t).or_insert(shard);
        }
    }

    #[test]
    fn token_counts_count_every_shards_tokens() {
        let r = ring(5, 32);
        let counts = r.token_counts();
        assert_eq!(counts.len(), 5);
        for (s, c) in counts {
            assert_eq!(c, r.tokens_of(s).len());
        }
    }

    #[test]
    fn a_ring_of_two_thousand_shards_is_built_at_once() {
        // Past `vnodes` shards each addition takes from fewer shards than there are; the
        // allocator must still match the reference on a prefix of such a ring.
        let fast = Ring::with_shards(1..=300, 8);
        let mut slow = Ring::new();
        for s in 1..=300 {
            reference_add_shard(&mut slow, s, 8);
        }
        assert_eq!(fast, slow);
        let started = std::time::Instant::now();
        let big = Ring::with_shards(1..=2000, 128);
        eprintln!("2,000 shards x 128 vnodes: {:?}", started.elapsed());
        assert_eq!(big.token_counts().len(), 2000);
    }

    proptest! {
        #[test]
        fn the_allocator_gives_the_tokens_of_the_reference(shards in 1u32..40, vnodes in 1u32..64, extra in 1u32..4) {
            let mut slow = Ring::new();
            for s in 1..=shards {
                reference_add_shard(&mut slow, s, vnodes);
            }
            prop_assert_eq!(&Ring::with_shards(1..=shards, vnodes), &slow);
            // One shard more on an existing ring, through the public one-at-a-time call.
            let mut fast = slow.clone();
            for s in shards + 1..=shards + extra {
                fast.add_shard(s, vnodes);
                reference_add_shard(&mut slow, s, vnodes);
            }
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn every_copy_of_a_ring_gives_the_same_owner(shards in 1u32..12, vnodes in 1u32..200, t in any::<u64>()) {
            let a = ring(shards, vnodes);
            let b: Ring = postcard::from_bytes(&postcard::to_stdvec(&a).unwrap()).unwrap();
            prop_assert_eq!(a.owner(t), b.owner(t));
            prop_assert_eq!(a.owner(t), ring(shards, vnodes).owner(t));
        }

        #[test]
        fn adding_a_shard_moves_keys_only_to_it_and_about_one_over_s_plus_one(shards in 1u32..16, seed in any::<u64>()) {
            let before = ring(shards, 128);
            let mut after = before.clone();
            let new = shards + 1;
            after.add_shard(new, 128);
            let keys = 4000u64;
            let mut moved = 0;
            for i in 0..keys {
                let t = token(&encode_values(&[Value::Int((seed.wrapping_add(i)) as i64)]));
                let (o1, o2) = (before.owner(t).unwrap(), after.owner(t).unwrap());
                if o1 != o2 {
                    prop_assert_eq!(o2, new, "a key moved between two old shards");
                    moved += 1;
                }
            }
            let expected = 1.0 / new as f64;
            let frac = moved as f64 / keys as f64;
            // Sampling noise on 4000 keys is about 1/sqrt(4000) of the share; the ring itself is exact.
            let share = after.shares()[&new];
            prop_assert!((share - expected).abs() <= 0.1 * expected, "share {share} vs {expected}");
            prop_assert!((frac - expected).abs() <= 0.1 * expected + 3.0 * (expected / keys as f64).sqrt(), "moved {frac} vs {expected}");
        }
    }
}
