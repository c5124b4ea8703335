//! Group commit: appends to one partition that wait while another append writes and fsyncs
//! are written together after it, and share one fsync.
//!
//! (Not consumer groups: "group commit" is the database term for one fsync covering the
//! commits of several transactions.)
//!
//! Each caller queues its call and waits. A caller that finds no group in progress leads the
//! next one: it takes every call waiting at that moment (its own among them, in arrival
//! order), runs them through the leader's function, and hands each caller its own result.
//! Calls that arrive meanwhile wait for the next group, which the first of them to wake up
//! leads. So one partition runs one group at a time, in order, and a call is never in two.
//!
//! The queue knows nothing about the log: what a call is, how a group is written and made
//! durable, and what each call's result says are the leader function's (see
//! `Partition::append`). It only guarantees that the function runs for every queued call,
//! once, with the calls in the order they were queued, and that each caller gets the result
//! the function gave its call.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A queue of calls of type `C`, each answered with an `R`.
pub struct GroupCommit<C, R> {
    inner: Mutex<Inner<C, R>>,
    wake: Condvar,
    /// A group takes waiting calls, in order, while their costs sum to at most this (and
    /// always at least one call), so one group's work stays bounded.
    max_cost: u64,
    cost: fn(&C) -> u64,
}

struct Inner<C, R> {
    /// Calls not yet taken by a leader, in arrival order, with their tickets.
    waiting: Vec<(u64, C)>,
    /// Results of calls whose group ended, by ticket, until their callers take them; `None`
    /// when the leader panicked before answering.
    done: HashMap<u64, Option<R>>,
    /// A group is being written.
    leading: bool,
    next_ticket: u64,
}

impl<C, R> GroupCommit<C, R> {
    /// A queue whose groups hold calls costing at most `max_cost` in all (by `cost`), or one
    /// call when it alone costs more.
    pub fn new(max_cost: u64, cost: fn(&C) -> u64) -> Self {
        let inner = Inner { waiting: Vec::new(), done: HashMap::new(), leading: false, next_ticket: 0 };
        GroupCommit { inner: Mutex::new(inner), wake: Condvar::new(), max_cost, cost }
    }

    /// Queues `call` and returns its result once a group holding it has run. If this caller
    /// leads, `lead` gets the group's calls in order and must return one result per call, in
    /// the same order.
    ///
    /// Panics if the leader of the call's group panicked (the caller learns nothing of what
    /// happened to its call, so it must not go on as if it knew).
    pub fn run(&self, call: C, lead: impl Fn(Vec<C>) -> Vec<R>) -> R {
        let mut inner = self.lock();
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        inner.waiting.push((ticket, call));
        loop {
            if let Some(result) = inner.done.remove(&ticket) {
                return result.expect("the leader of this append's group commit panicked");
            }
            if inner.leading {
                inner = self.wake.wait(inner).unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            // No group is running and this call is still waiting (a finished group would have
            // answered it): lead the next group, with the calls waiting now, oldest first, as
            // far as the cost allows. Those left wait for the next group, which this caller
            // leads again if its own call is among them.
            inner.leading = true;
            let (mut taken, mut cost) = (0, 0u64);
            while taken < inner.waiting.len() {
                cost = cost.saturating_add((self.cost)(&inner.waiting[taken].1));
                if taken > 0 && cost > self.max_cost {
                    break;
                }
                taken += 1;
            }
            let (tickets, calls): (Vec<u64>, Vec<C>) = inner.waiting.drain(..taken).unzip();
            drop(inner);
            let mut guard = Leading { queue: self, own: ticket, tickets, results: None };
            let results = lead(calls);
            assert_eq!(results.len(), guard.tickets.len(), "one result per call of the group");
            guard.results = Some(results);
            drop(guard); // hands the results over and wakes the waiters
            inner = self.lock();
        }
    }

    /// Calls waiting for the next group.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner<C, R>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The leader's hand-over, also when its function panics: every call of the group is answered
/// (with `None` after a panic, so its caller panics too instead of waiting forever) and the
/// next group may start.
struct Leading<'q, C, R> {
    queue: &'q GroupCommit<C, R>,
    /// The leader's own call, whose answer nobody takes after a panic.
    own: u64,
    tickets: Vec<u64>,
    results: Option<Vec<R>>,
}

impl<C, R> Drop for Leading<'_, C, R> {
    fn drop(&mut self) {
        let mut inner = self.queue.lock();
        let panicked = self.results.is_none();
        if panicked {
            // The leader's own call, when the cost left it for a later group: its caller is
            // gone, so no later group may write it for nobody.
            inner.waiting.retain(|(ticket, _)| *ticket != self.own);
        }
        let results = self.results.take().map(|r| r.into_iter().map(Some).collect::<Vec<_>>());
        let results = results.unwrap_or_else(|| self.tickets.iter().map(|_| None).collect());
        for (ticket, result) in self.tickets.iter().zip(results) {
            if !(panicked && *ticket == self.own) {
                inner.done.insert(*ticket, result);
            }
        }
        inner.leading = false;
        drop(inner);
        self.queue.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    /// Runs `call` on a thread as a group whose leader, once inside it, waits until the
    /// returned sender sends: calls queued meanwhile wait for the next group. Returns once the
    /// leader is inside.
    fn group_held_open<R: Send + 'static>(
        queue: &Arc<GroupCommit<u32, R>>,
        call: u32,
        lead: impl Fn(Vec<u32>) -> Vec<R> + Send + 'static,
    ) -> (JoinHandle<R>, mpsc::Sender<()>) {
        let (entered, wait_entered) = mpsc::channel();
        let (release, wait_release) = mpsc::channel::<()>();
        let wait_release = Mutex::new(wait_release);
        let queue = queue.clone();
        let leader = std::thread::spawn(move || {
            queue.run(call, |calls| {
                entered.send(()).unwrap();
                wait_release.lock().unwrap().recv().unwrap();
                lead(calls)
            })
        });
        wait_entered.recv().unwrap();
        (leader, release)
    }

    /// Runs `call` on a thread and returns once it is queued, as the `n`th call waiting.
    fn queue_behind<R: Send + 'static>(
        queue: &Arc<GroupCommit<u32, R>>,
        call: u32,
        n: usize,
        lead: impl Fn(Vec<u32>) -> Vec<R> + Send + 'static,
    ) -> JoinHandle<R> {
        let caller = queue.clone();
        let handle = std::thread::spawn(move || caller.run(call, lead));
        while queue.lock().waiting.len() < n {
            std::thread::yield_now();
        }
        handle
    }

    #[test]
    fn a_lone_call_leads_its_own_group() {
        let queue = GroupCommit::<u32, u32>::new(u64::MAX, |_| 1);
        assert_eq!(queue.run(7, |calls| calls.iter().map(|c| c * 2).collect()), 14);
        assert_eq!(queue.run(8, |calls| calls.iter().map(|c| c + 1).collect()), 9);
    }

    /// Calls that arrive while a group runs wait and go together in the next group, in
    /// arrival order, each answered with its own result.
    #[test]
    fn calls_queued_behind_a_group_share_the_next_one() {
        let queue = Arc::new(GroupCommit::<u32, (u32, usize)>::new(u64::MAX, |_| 1));
        let groups = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let recorded = groups.clone();
        let (leader, release) = group_held_open(&queue, 0, move |calls| {
            recorded.lock().unwrap().push(calls.clone());
            calls.iter().map(|&c| (c, 1)).collect()
        });
        // Queued in this order before the first group ends.
        let followers: Vec<_> = (1..=3)
            .map(|i| {
                let groups = groups.clone();
                queue_behind(&queue, i, i as usize, move |calls| {
                    let n = calls.len();
                    groups.lock().unwrap().push(calls.clone());
                    calls.iter().map(|&c| (c, n)).collect()
                })
            })
            .collect();
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), (0, 1));
        let answers: Vec<_> = followers.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(answers, vec![(1, 3), (2, 3), (3, 3)], "each call answered with its own result, one group of 3");
        assert_eq!(*groups.lock().unwrap(), vec![vec![0], vec![1, 2, 3]]);
    }

    /// Under contention every call runs exactly once, no group passes its cost (3 calls
    /// here), and no caller is left waiting.
    #[test]
    fn every_call_runs_once_under_contention() {
        let queue = Arc::new(GroupCommit::<usize, usize>::new(3, |_| 1));
        let ran = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (queue, ran) = (queue.clone(), ran.clone());
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let call = t * 1000 + i;
                        let answer = queue.run(call, |calls| {
                            assert!(calls.len() <= 3, "a group stays within its cost: {}", calls.len());
                            ran.fetch_add(calls.len(), Ordering::SeqCst);
                            calls.iter().map(|c| c + 1).collect()
                        });
                        assert_eq!(answer, call + 1);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(ran.load(Ordering::SeqCst), 8 * 500);
        let inner = queue.lock();
        assert!(inner.waiting.is_empty() && inner.done.is_empty() && !inner.leading);
    }

    /// Calls over a group's cost wait for the next group, in order.
    #[test]
    fn calls_past_a_groups_cost_go_in_the_next_group() {
        let queue = Arc::new(GroupCommit::<u32, u32>::new(5, |&c| u64::from(c)));
        let groups = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let recording = |groups: &Arc<Mutex<Vec<Vec<u32>>>>| {
            let groups = groups.clone();
            move |calls: Vec<u32>| {
                groups.lock().unwrap().push(calls.clone());
                calls
            }
        };
        let (first, release) = group_held_open(&queue, 1, recording(&groups));
        // Costs 2, 3, 4, 9: groups [2, 3] (5), [4], [9] (alone over the cost).
        let queued: Vec<_> = [2u32, 3, 4, 9]
            .into_iter()
            .enumerate()
            .map(|(i, c)| queue_behind(&queue, c, i + 1, recording(&groups)))
            .collect();
        release.send(()).unwrap();
        assert_eq!(first.join().unwrap(), 1);
        let answers: Vec<u32> = queued.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(answers, vec![2, 3, 4, 9]);
        assert_eq!(*groups.lock().unwrap(), vec![vec![1], vec![2, 3], vec![4], vec![9]]);
    }

    /// A leader that panics answers its group's other callers with a panic, not a wait
    /// forever, and the next call leads a fresh group.
    #[test]
    fn a_panicking_leader_does_not_strand_its_group() {
        let queue = Arc::new(GroupCommit::<u32, u32>::new(u64::MAX, |_| 1));
        // A first group held open, so that two calls queue behind it and form the next one.
        let (first, release) = group_held_open(&queue, 0, |calls| calls);
        let fails = |_: Vec<u32>| -> Vec<u32> { panic!("the group's leader fails") };
        let second: Vec<_> = (1..=2).map(|i| queue_behind(&queue, i, i as usize, fails)).collect();
        release.send(()).unwrap();
        assert_eq!(first.join().unwrap(), 0);
        // Whichever led the second group panicked in it; the other learned of it and panicked
        // too, rather than waiting for an answer that never comes.
        for handle in second {
            assert!(handle.join().is_err());
        }
        assert_eq!(queue.run(3, |calls| calls), 3);
        assert!(queue.lock().done.is_empty(), "no answer is left behind for a caller that is gone");
    }
}
