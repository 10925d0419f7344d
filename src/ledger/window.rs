//! The ledger's entries, indexed so that no call scans them: by id (settle, release, a fallback's
//! move), by time per model (the sliding window's request and token counts are running sums,
//! corrected only for the few entries that left since the last call), the reservations apart (in
//! flight: few), and the estimates by time (kept a day). A key settling 250 requests a second
//! keeps ~15,000 entries for the window; each call touches only its own.
//!
//! The rules in `super` see the entries as the list they were: in the order they were added, a
//! refused fallback's reservation added again at the end (that order names which of two entries
//! with one id a settlement finds, and the order rows are reported changed or removed).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Entry, EntryState, ESTIMATE_MEMORY_MS, WINDOW_MS};

/// One model's entries in the window as of `Entries::cursor`, by time (at, insertion number),
/// and the sum of their tokens.
#[derive(Clone)]
struct ModelWindow {
    model: String,
    queue: Fifo<(u64, u64)>,
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
    /// By insertion number (`base` is the front's): the rules' order. A removed entry leaves a
    /// hole until the front passes it, or the list is renumbered.
    slots: Fifo<Option<Entry>>,
    base: u64,
    live: usize,
    /// Each id's first insertion number, and how many entries have it (more than one only when
    /// an id comes again: then the list is searched, which real call ids never need).
    by_id: HashMap<String, (u64, u64)>,
    /// Unsettled reservations, in insertion order.
    reserved: Vec<u64>,
    /// Estimated and corrected entries by (at, insertion number).
    remembered: Fifo<(u64, u64)>,
    /// Settled entries outside the window (settled after leaving it): dropped at the next prune.
    stale: Vec<u64>,
    /// Every entry with `at + WINDOW_MS > cursor`, by model (a key uses few; kept when empty).
    window: Vec<ModelWindow>,
    cursor: u64,
}

fn in_window(at: u64, now: u64) -> bool {
    at.saturating_add(WINDOW_MS) > now
}

/// A queue as a vector and the index of its front (less code in the wasm than a ring buffer):
/// a pop moves the index; what is behind it goes when it is half the vector.
#[derive(Clone)]
struct Fifo<T> {
    items: Vec<T>,
    head: usize,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo { items: Vec::new(), head: 0 }
    }
}

impl<T> std::ops::Deref for Fifo<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items[self.head..]
    }
}

impl<T> std::ops::DerefMut for Fifo<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items[self.head..]
    }
}

impl<T> Fifo<T> {
    fn push(&mut self, item: T) {
        self.items.push(item);
    }

    fn insert(&mut self, at: usize, item: T) {
        self.items.insert(self.head + at, item);
    }

    fn remove(&mut self, at: usize) {
        self.items.remove(self.head + at);
    }

    fn pop_front(&mut self) {
        self.head += 1;
        if self.head >= 32 && self.head * 2 >= self.items.len() {
            self.items.drain(..self.head);
            self.head = 0;
        }
    }

    fn into_vec(mut self) -> Vec<T> {
        self.items.drain(..self.head);
        self.items
    }
}

fn sorted_insert(queue: &mut Fifo<(u64, u64)>, item: (u64, u64)) {
    let at = queue.partition_point(|x| *x <= item);
    queue.insert(at, item);
}

fn sorted_remove(queue: &mut Fifo<(u64, u64)>, item: (u64, u64)) {
    if let Ok(at) = queue.binary_search(&item) {
        queue.remove(at);
    }
}

fn saturated(sum: u128) -> u64 {
    u64::try_from(sum).unwrap_or(u64::MAX)
}

impl Entries {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// In the rules' order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().flatten()
    }

    /// The entries from insertion number `seq` on, with theirs.
    fn since(&self, seq: u64) -> impl DoubleEndedIterator<Item = (u64, &Entry)> {
        let base = self.base;
        self.slots[(seq - base) as usize..]
            .iter()
            .enumerate()
            .filter_map(move |(i, e)| e.as_ref().map(|e| (seq + i as u64, e)))
    }

    /// The entry most recently added with `id` (what the object stores under it).
    pub fn latest(&self, id: &str) -> Option<&Entry> {
        let &(first, count) = self.by_id.get(id)?;
        if count == 1 {
            return self.get(first);
        }
        self.since(first).rev().map(|(_, e)| e).find(|e| e.id == id)
    }

    pub(super) fn get(&self, seq: u64) -> Option<&Entry> {
        self.slots.get(usize::try_from(seq.checked_sub(self.base)?).ok()?)?.as_ref()
    }

    fn slot(&mut self, seq: u64) -> Option<&mut Option<Entry>> {
        self.slots.get_mut(usize::try_from(seq.checked_sub(self.base)?).ok()?)
    }

    /// The first entry with `id` (a reserved one only, if `reserved`).
    pub(super) fn find(&self, id: &str, reserved: bool) -> Option<u64> {
        let &(first, count) = self.by_id.get(id)?;
        if count == 1 {
            return self.get(first).filter(|e| !reserved || e.is_reserved()).map(|_| first);
        }
        self.since(first).find(|(_, e)| e.id == id && (!reserved || e.is_reserved())).map(|(seq, _)| seq)
    }

    /// The reservations, in the rules' order.
    pub(super) fn reserved(&self) -> impl Iterator<Item = &Entry> {
        self.reserved.iter().filter_map(|seq| self.get(*seq))
    }

    /// The reservations admitted at or before `at`, in the rules' order.
    pub(super) fn reserved_since(&self, at: u64) -> Vec<u64> {
        self.reserved.iter().copied().filter(|seq| self.get(*seq).is_some_and(|e| e.at <= at)).collect()
    }

    /// The estimates (not yet corrected), in the rules' order.
    pub(super) fn estimated_seqs(&self) -> Vec<u64> {
        // (seq, 0) pairs: sorted by the same code as the window's pairs (one sort in the wasm).
        let mut seqs: Vec<(u64, u64)> = self
            .remembered
            .iter()
            .filter(|(_, seq)| self.get(*seq).is_some_and(|e| matches!(e.state, EntryState::Estimated { .. })))
            .map(|(_, seq)| (*seq, 0))
            .collect();
        seqs.sort_unstable();
        seqs.into_iter().map(|(seq, _)| seq).collect()
    }

    fn model_window(&mut self, model: &str) -> Option<&mut ModelWindow> {
        self.window.iter_mut().find(|w| w.model == model)
    }

    /// Adds an entry at the end.
    pub(super) fn push(&mut self, entry: Entry) {
        let seq = self.base + self.slots.len() as u64;
        // One lookup (an id is new but for a repeat or a moved reservation).
        self.by_id.entry(entry.id.clone()).or_insert((seq, 0)).1 += 1;
        match entry.state {
            EntryState::Reserved { .. } => self.reserved.push(seq),
            EntryState::Settled if !in_window(entry.at, self.cursor) => self.stale.push(seq),
            EntryState::Settled => {}
            EntryState::Estimated { .. } | EntryState::Corrected => {
                sorted_insert(&mut self.remembered, (entry.at, seq))
            }
        }
        if in_window(entry.at, self.cursor) {
            let i = match self.window.iter().position(|w| w.model == entry.model) {
                Some(i) => i,
                None => {
                    let model = entry.model.clone();
                    self.window.push(ModelWindow { model, queue: Fifo::default(), tokens: 0 });
                    self.window.len() - 1
                }
            };
            let window = &mut self.window[i];
            sorted_insert(&mut window.queue, (entry.at, seq));
            window.tokens += u128::from(entry.tokens);
        }
        self.slots.push(Some(entry));
        self.live += 1;
    }

    /// Removes an entry from the list and every index.
    pub(super) fn take(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.slot(seq)?.take()?;
        self.live -= 1;
        // One lookup when the id had one entry (always, but in tests).
        if let Some((first, count)) = self.by_id.remove(&entry.id) {
            if count > 1 {
                let first = if first == seq {
                    self.since(seq).find(|(_, e)| e.id == entry.id).map_or(seq, |(s, _)| s)
                } else {
                    first
                };
                self.by_id.insert(entry.id.clone(), (first, count - 1));
            }
        }
        while let Some(None) = self.slots.first() {
            self.slots.pop_front();
            self.base += 1;
        }
        match entry.state {
            EntryState::Reserved { .. } => self.reserved.retain(|s| *s != seq),
            EntryState::Settled => self.stale.retain(|s| *s != seq),
            EntryState::Estimated { .. } | EntryState::Corrected => {
                sorted_remove(&mut self.remembered, (entry.at, seq))
            }
        }
        if in_window(entry.at, self.cursor) {
            if let Some(window) = self.model_window(&entry.model) {
                sorted_remove(&mut window.queue, (entry.at, seq));
                window.tokens -= u128::from(entry.tokens);
            }
        }
        Some(entry)
    }

    /// Changes an entry's tokens and state (its id, time and model stay).
    pub(super) fn update(&mut self, seq: u64, tokens: u64, state: EntryState) {
        let cursor = self.cursor;
        let Some(i) = seq.checked_sub(self.base) else { return };
        // The slots and the windows borrowed apart: the entry's model is not copied.
        let Some(Some(entry)) = self.slots.get_mut(i as usize) else { return };
        let (old_tokens, was_reserved, was_remembered) = (entry.tokens, entry.is_reserved(), entry.remembered());
        entry.tokens = tokens;
        entry.state = state;
        let (at, is_reserved, is_remembered) = (entry.at, entry.is_reserved(), entry.remembered());
        let settled = matches!(entry.state, EntryState::Settled);
        if in_window(at, cursor) {
            if let Some(window) = self.window.iter_mut().find(|w| w.model == entry.model) {
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
        debug_assert!((was_reserved || !is_reserved) && (is_remembered || !was_remembered));
    }

    /// Drops what no longer counts at `now`: settled entries out of the window, estimates a day
    /// old. Their ids go to `removed`, in the rules' order.
    pub(super) fn prune(&mut self, now: u64, removed: &mut Vec<String>) {
        if now < self.cursor {
            // The clock went back: what left the window may be in it again.
            self.reindex(now);
        }
        // (seq, 0) pairs, for the shared sort.
        let mut dropped: Vec<(u64, u64)> = self.stale.drain(..).map(|seq| (seq, 0)).collect();
        let (slots, base) = (&self.slots, self.base);
        for window in &mut self.window {
            while let Some(&(at, seq)) = window.queue.first() {
                if in_window(at, now) {
                    break;
                }
                window.queue.pop_front();
                let Some(Some(entry)) = slots.get((seq - base) as usize) else { continue };
                window.tokens -= u128::from(entry.tokens);
                if matches!(entry.state, EntryState::Settled) {
                    dropped.push((seq, 0));
                }
            }
        }
        self.cursor = now;
        for &(at, seq) in self.remembered.iter() {
            if at.saturating_add(ESTIMATE_MEMORY_MS) > now {
                break;
            }
            dropped.push((seq, 0));
        }
        if dropped.is_empty() {
            return;
        }
        dropped.sort_unstable();
        for (seq, _) in dropped {
            if let Some(entry) = self.take(seq) {
                removed.push(entry.id);
            }
        }
        // Holes behind an entry kept long (an estimate, a day) are closed now and then.
        if self.slots.len() > 2 * self.live + 64 {
            self.reindex(now);
        }
    }

    /// The requests and tokens in the window at `now`, of `model` or of all models.
    pub(super) fn totals(&self, now: u64, model: Option<&str>) -> WindowTotals {
        if now < self.cursor {
            return self.recount(now, model);
        }
        let mut totals = WindowTotals::default();
        let (mut requests, mut tokens) = (0u64, 0u128);
        for window in self.window.iter().filter(|w| model.is_none_or(|m| w.model == m)) {
            // Those that left since the cursor are subtracted.
            let (mut left, mut left_tokens) = (0usize, 0u128);
            for &(at, seq) in window.queue.iter() {
                if in_window(at, now) {
                    totals.oldest = Some(totals.oldest.map_or(at, |o| o.min(at)));
                    break;
                }
                left += 1;
                left_tokens += u128::from(self.get(seq).map_or(0, |e| e.tokens));
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
        let matches = |m: &str| model.is_none_or(|model| model == m);
        if now < self.cursor {
            return self
                .iter()
                .filter(|e| in_window(e.at, now) && matches(&e.model))
                .map(|e| (e.at, e.tokens))
                .collect();
        }
        self.window
            .iter()
            .filter(|w| matches(&w.model))
            .flat_map(|w| w.queue.iter())
            .filter(|(at, _)| in_window(*at, now))
            .map(|&(at, seq)| (at, self.get(seq).map_or(0, |e| e.tokens)))
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

    /// Numbers the entries again, without holes, and builds every index again, as of `cursor`.
    fn reindex(&mut self, cursor: u64) {
        let slots = std::mem::take(&mut self.slots);
        *self = Entries { cursor, ..Entries::default() };
        for entry in slots.into_vec().into_iter().flatten() {
            self.push(entry);
        }
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
    /// The slots, holes included.
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Every index, checked against the list itself (panics on a difference).
    pub(super) fn check(&self, now: u64) {
        let mut copy = Entries { slots: self.slots.clone(), base: self.base, ..Entries::default() };
        copy.reindex(self.cursor);
        // The copy is numbered from 0 without holes: compare by position in the list.
        let position: HashMap<u64, u64> =
            self.since(self.base).enumerate().map(|(i, (seq, _))| (seq, i as u64)).collect();
        let at = |seq: &u64| position[seq];
        let pairs = |q: &Fifo<(u64, u64)>| q.iter().map(|(a, s)| (*a, at(s))).collect::<Vec<_>>();
        assert_eq!(self.live, self.iter().count(), "live");
        let by_id: HashMap<String, (u64, u64)> =
            self.by_id.iter().map(|(k, (s, n))| (k.clone(), (at(s), *n))).collect();
        assert_eq!(copy.by_id, by_id, "ids");
        assert_eq!(copy.reserved, self.reserved.iter().map(at).collect::<Vec<_>>(), "reservations");
        let remembered: Vec<(u64, u64)> = copy.remembered.iter().copied().collect();
        assert_eq!(remembered, pairs(&self.remembered), "estimates");
        let mut stale: Vec<u64> = self.stale.iter().map(at).collect();
        stale.sort_unstable();
        assert_eq!(copy.stale, stale, "stale");
        let mut models: Vec<&String> = self.window.iter().filter(|w| !w.queue.is_empty()).map(|w| &w.model).collect();
        models.sort();
        let mut expected: Vec<&String> = copy.window.iter().map(|w| &w.model).collect();
        expected.sort();
        assert_eq!(models, expected, "models in the window");
        for window in self.window.iter().filter(|w| !w.queue.is_empty()) {
            let other = copy.window.iter().find(|w| w.model == window.model).unwrap();
            let copied: Vec<(u64, u64)> = other.queue.iter().copied().collect();
            assert_eq!(pairs(&window.queue), copied, "{}'s window", window.model);
            assert_eq!(window.tokens, other.tokens, "{}'s tokens", window.model);
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
