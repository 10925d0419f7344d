//! The ledger's entries, indexed so that no call scans them: by id (settle, release, a fallback's
//! move), by time per model (the sliding window's request and token counts are running sums,
//! corrected only for the few entries that left since the last call), the reservations apart (in
//! flight: few), and the estimates by time (kept a day). A key settling 250 requests a second
//! keeps ~15,000 entries for the window; each call touches only its own.
//!
//! The rules in `super` see the entries as the list they were: in the order they were added, a
//! refused fallback's reservation added again at the end (that order names which of two entries
//! with one id a settlement finds, and the order rows are reported changed or removed).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Entry, EntryState, ESTIMATE_MEMORY_MS, WINDOW_MS};

/// One model's entries in the window as of `Entries::cursor`, by time (at, insertion number),
/// and the sum of their tokens.
#[derive(Clone, Default)]
struct ModelWindow {
    queue: VecDeque<(u64, u64)>,
    tokens: u128,
}

/// The window's figures for the requests of one model, or of all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowTotals {
    pub requests: u64,
    pub tokens: u64,
    /// When the oldest of them was admitted.
    pub oldest: Option<u64>,
}

#[derive(Clone, Default)]
pub struct Entries {
    /// By insertion number: the rules' order.
    by_seq: BTreeMap<u64, Entry>,
    next_seq: u64,
    /// Each id's insertion numbers, oldest first (more than one only when an id comes again).
    by_id: HashMap<String, Vec<u64>>,
    /// Unsettled reservations, in insertion order.
    reserved: Vec<u64>,
    /// Estimated and corrected entries by (at, insertion number).
    remembered: VecDeque<(u64, u64)>,
    /// Settled entries outside the window (settled after leaving it): dropped at the next prune.
    stale: Vec<u64>,
    /// Every entry with `at + WINDOW_MS > cursor`, by model.
    window: HashMap<String, ModelWindow>,
    cursor: u64,
}

fn in_window(at: u64, now: u64) -> bool {
    at.saturating_add(WINDOW_MS) > now
}

fn sorted_insert(queue: &mut VecDeque<(u64, u64)>, item: (u64, u64)) {
    let at = queue.partition_point(|x| *x <= item);
    queue.insert(at, item);
}

fn sorted_remove(queue: &mut VecDeque<(u64, u64)>, item: (u64, u64)) {
    if let Ok(at) = queue.binary_search(&item) {
        queue.remove(at);
    }
}

fn saturated(sum: u128) -> u64 {
    u64::try_from(sum).unwrap_or(u64::MAX)
}

impl Entries {
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// In the rules' order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.by_seq.values()
    }

    /// The entry most recently added with `id` (what the object stores under it).
    pub fn latest(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id)?.last().and_then(|seq| self.by_seq.get(seq))
    }

    pub(super) fn get(&self, seq: u64) -> &Entry {
        &self.by_seq[&seq]
    }

    /// The first entry with `id` (a reserved one only, if `reserved`).
    pub(super) fn find(&self, id: &str, reserved: bool) -> Option<u64> {
        self.by_id.get(id)?.iter().copied().find(|seq| !reserved || self.by_seq[seq].is_reserved())
    }

    /// The reservations, in the rules' order.
    pub(super) fn reserved(&self) -> impl Iterator<Item = &Entry> {
        self.reserved.iter().map(|seq| &self.by_seq[seq])
    }

    pub(super) fn reserved_seqs(&self) -> Vec<u64> {
        self.reserved.clone()
    }

    /// The estimates (not yet corrected), in the rules' order.
    pub(super) fn estimated_seqs(&self) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .remembered
            .iter()
            .map(|(_, seq)| *seq)
            .filter(|seq| matches!(self.by_seq[seq].state, EntryState::Estimated { .. }))
            .collect();
        seqs.sort_unstable();
        seqs
    }

    /// Adds an entry at the end.
    pub(super) fn push(&mut self, entry: Entry) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.entry(entry.id.clone()).or_default().push(seq);
        match entry.state {
            EntryState::Reserved { .. } => self.reserved.push(seq),
            EntryState::Settled if !in_window(entry.at, self.cursor) => self.stale.push(seq),
            EntryState::Settled => {}
            EntryState::Estimated { .. } | EntryState::Corrected => {
                sorted_insert(&mut self.remembered, (entry.at, seq))
            }
        }
        if in_window(entry.at, self.cursor) {
            let window = self.window.entry(entry.model.clone()).or_default();
            sorted_insert(&mut window.queue, (entry.at, seq));
            window.tokens += u128::from(entry.tokens);
        }
        self.by_seq.insert(seq, entry);
    }

    /// Removes an entry from the list and every index.
    pub(super) fn take(&mut self, seq: u64) -> Entry {
        let entry = self.by_seq.remove(&seq).expect("an entry of the list");
        if let Some(seqs) = self.by_id.get_mut(&entry.id) {
            seqs.retain(|s| *s != seq);
            if seqs.is_empty() {
                self.by_id.remove(&entry.id);
            }
        }
        match entry.state {
            EntryState::Reserved { .. } => self.reserved.retain(|s| *s != seq),
            EntryState::Settled => self.stale.retain(|s| *s != seq),
            EntryState::Estimated { .. } | EntryState::Corrected => {
                sorted_remove(&mut self.remembered, (entry.at, seq))
            }
        }
        if in_window(entry.at, self.cursor) {
            if let Some(window) = self.window.get_mut(&entry.model) {
                sorted_remove(&mut window.queue, (entry.at, seq));
                window.tokens -= u128::from(entry.tokens);
                if window.queue.is_empty() {
                    self.window.remove(&entry.model);
                }
            }
        }
        entry
    }

    /// Changes an entry's tokens and state (its id, time and model stay).
    pub(super) fn update(&mut self, seq: u64, tokens: u64, state: EntryState) {
        let entry = self.by_seq.get_mut(&seq).expect("an entry of the list");
        let (old_tokens, was_reserved, was_remembered) = (entry.tokens, entry.is_reserved(), entry.remembered());
        entry.tokens = tokens;
        entry.state = state;
        let (at, is_reserved, is_remembered) = (entry.at, entry.is_reserved(), entry.remembered());
        let settled = matches!(entry.state, EntryState::Settled);
        if in_window(at, self.cursor) {
            if let Some(window) = self.window.get_mut(&entry.model) {
                window.tokens = window.tokens - u128::from(old_tokens) + u128::from(tokens);
            }
        } else if settled {
            self.stale.push(seq);
        }
        if was_reserved && !is_reserved {
            self.reserved.retain(|s| *s != seq);
        }
        if !was_remembered && is_remembered {
            sorted_insert(&mut self.remembered, (at, seq));
        }
        debug_assert!(!(is_reserved && !was_reserved) && !(was_remembered && !is_remembered));
    }

    /// Drops what no longer counts at `now`: settled entries out of the window, estimates a day
    /// old. Their ids go to `removed`, in the rules' order.
    pub(super) fn prune(&mut self, now: u64, removed: &mut Vec<String>) {
        if now < self.cursor {
            // The clock went back: what left the window may be in it again.
            self.reindex(now);
        }
        let mut dropped = std::mem::take(&mut self.stale);
        let by_seq = &self.by_seq;
        self.window.retain(|_, window| {
            while let Some(&(at, seq)) = window.queue.front() {
                if in_window(at, now) {
                    break;
                }
                window.queue.pop_front();
                let entry = &by_seq[&seq];
                window.tokens -= u128::from(entry.tokens);
                if matches!(entry.state, EntryState::Settled) {
                    dropped.push(seq);
                }
            }
            !window.queue.is_empty()
        });
        self.cursor = now;
        for &(at, seq) in &self.remembered {
            if at.saturating_add(ESTIMATE_MEMORY_MS) > now {
                break;
            }
            dropped.push(seq);
        }
        if dropped.is_empty() {
            return;
        }
        dropped.sort_unstable();
        for seq in dropped {
            let entry = self.take(seq);
            removed.push(entry.id);
        }
    }

    /// The requests and tokens in the window at `now`, of `model` or of all models.
    pub(super) fn totals(&self, now: u64, model: Option<&str>) -> WindowTotals {
        if now < self.cursor {
            return self.recount(now, model);
        }
        let mut totals = WindowTotals::default();
        let (mut requests, mut tokens) = (0u64, 0u128);
        let windows: Vec<&ModelWindow> = match model {
            Some(m) => self.window.get(m).into_iter().collect(),
            None => self.window.values().collect(),
        };
        for window in windows {
            // Those that left since the cursor are subtracted.
            let (mut left, mut left_tokens) = (0usize, 0u128);
            for &(at, seq) in &window.queue {
                if in_window(at, now) {
                    totals.oldest = Some(totals.oldest.map_or(at, |o| o.min(at)));
                    break;
                }
                left += 1;
                left_tokens += u128::from(self.by_seq[&seq].tokens);
            }
            requests += (window.queue.len() - left) as u64;
            tokens += window.tokens - left_tokens;
        }
        totals.requests = requests;
        totals.tokens = saturated(tokens);
        totals
    }

    /// The (time, tokens) of the requests in the window at `now`, of `model` or of all models,
    /// unordered.
    pub(super) fn window_times(&self, now: u64, model: Option<&str>) -> Vec<(u64, u64)> {
        let matches = |e: &Entry| model.is_none_or(|m| e.model == m);
        if now < self.cursor {
            return self.iter().filter(|e| in_window(e.at, now) && matches(e)).map(|e| (e.at, e.tokens)).collect();
        }
        let windows: Vec<&ModelWindow> = match model {
            Some(m) => self.window.get(m).into_iter().collect(),
            None => self.window.values().collect(),
        };
        windows
            .into_iter()
            .flat_map(|w| w.queue.iter())
            .filter(|(at, _)| in_window(*at, now))
            .map(|&(at, seq)| (at, self.by_seq[&seq].tokens))
            .collect()
    }

    /// [`Self::totals`] counted from the list itself.
    fn recount(&self, now: u64, model: Option<&str>) -> WindowTotals {
        let mut totals = WindowTotals::default();
        for e in self.iter().filter(|e| in_window(e.at, now) && model.is_none_or(|m| e.model == m)) {
            totals.requests += 1;
            totals.tokens = totals.tokens.saturating_add(e.tokens);
            totals.oldest = Some(totals.oldest.map_or(e.at, |o| o.min(e.at)));
        }
        totals
    }

    /// Builds every index again from the list, as of `cursor`.
    fn reindex(&mut self, cursor: u64) {
        let entries = std::mem::take(&mut self.by_seq);
        let next_seq = self.next_seq;
        *self = Entries { cursor, ..Entries::default() };
        for (seq, entry) in entries {
            self.next_seq = seq;
            self.push(entry);
        }
        self.next_seq = next_seq;
    }
}

impl From<Vec<Entry>> for Entries {
    fn from(list: Vec<Entry>) -> Self {
        let mut entries = Entries::default();
        for entry in list {
            entries.push(entry);
        }
        entries
    }
}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Entries {}

/// As the list of entries it was.
impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Entry>::deserialize(deserializer).map(Entries::from)
    }
}

#[cfg(test)]
impl Entries {
    /// Every index, checked against the list itself (panics on a difference).
    pub(super) fn check(&self, now: u64) {
        let mut copy = Entries { by_seq: self.by_seq.clone(), next_seq: self.next_seq, ..Entries::default() };
        copy.reindex(self.cursor);
        assert_eq!(copy.by_id, self.by_id, "ids");
        assert_eq!(copy.reserved, self.reserved, "reservations");
        assert_eq!(copy.remembered, self.remembered, "estimates");
        let mut stale = self.stale.clone();
        stale.sort_unstable();
        assert_eq!(copy.stale, stale, "stale");
        let mut models: Vec<&String> = self.window.keys().collect();
        models.sort();
        let mut expected: Vec<&String> = copy.window.keys().collect();
        expected.sort();
        assert_eq!(models, expected, "models in the window");
        for (model, window) in &self.window {
            assert_eq!(window.queue, copy.window[model].queue, "{model}'s window");
            assert_eq!(window.tokens, copy.window[model].tokens, "{model}'s tokens");
        }
        let mut models: Vec<Option<&str>> = self.iter().map(|e| Some(e.model.as_str())).collect();
        models.sort_unstable();
        models.dedup();
        models.push(None);
        models.push(Some("none"));
        for at in [now.saturating_sub(1), now, now + 1, now + WINDOW_MS / 2, now + WINDOW_MS] {
            for model in &models {
                assert_eq!(self.totals(at, *model), self.recount(at, *model), "totals of {model:?} at {at}");
                let mut listed = self.window_times(at, *model);
                listed.sort_unstable();
                let mut counted: Vec<(u64, u64)> = self
                    .iter()
                    .filter(|e| in_window(e.at, at) && model.is_none_or(|m| e.model == m))
                    .map(|e| (e.at, e.tokens))
                    .collect();
                counted.sort_unstable();
                assert_eq!(listed, counted, "window of {model:?} at {at}");
            }
        }
    }
}
