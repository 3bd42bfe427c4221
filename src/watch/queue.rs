//! The bounded hand-over between an event source's thread and a set's
//! engine thread. A source never blocks: when the queue is full the event
//! is dropped and the queue remembers that events were lost, which the
//! engine turns into a re-scan of the set's roots (the same as a kernel
//! queue overflow). So memory stays bounded under any write storm and no
//! change is silently missed. Plain data and a condition variable: knows
//! nothing of kernels, scanning or the index.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::coalesce::Event;

/// Default capacity in events.
pub const CAPACITY: usize = 65_536;

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Event>,
    lost: bool,
    stop: bool,
    failed: Option<String>,
    /// Events the engine took but has not settled yet (see
    /// [`Queue::settled`]).
    taken: usize,
}

/// What [`Queue::wait`] returns.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    pub items: Vec<Event>,
    /// Events were dropped since the last wait.
    pub lost: bool,
    /// The engine was asked to stop.
    pub stop: bool,
    /// The source stopped delivering events, and why.
    pub failed: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    cv: Condvar,
    capacity: usize,
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            inner: Mutex::new(Inner::default()),
            cv: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an input; drops it (and records the loss) when full.
    pub fn push(&self, input: Event) {
        let mut g = self.lock();
        if g.items.len() >= self.capacity {
            g.lost = true;
        } else {
            g.items.push_back(input);
        }
        drop(g);
        self.cv.notify_one();
    }

    /// Events waiting for the engine or taken by it and not settled (a
    /// loss counts as one). Read under the lock the engine takes them
    /// with, so an event is always counted here or by the engine.
    pub fn queued(&self) -> usize {
        let g = self.lock();
        g.items.len() + usize::from(g.lost) + g.taken
    }

    /// The engine has accounted for everything it took (committed it, or
    /// counts it as pending itself).
    pub fn settled(&self) {
        self.lock().taken = 0;
    }

    /// Records that the source itself lost events.
    pub fn lost(&self) {
        self.lock().lost = true;
        self.cv.notify_one();
    }

    /// The source can deliver no more events: the set cannot be watched.
    pub fn fail(&self, why: String) {
        self.lock().failed.get_or_insert(why);
        self.cv.notify_one();
    }

    /// Asks the engine to stop.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_one();
    }

    /// Waits until something arrives or `deadline` passes (forever when
    /// `None`), then takes everything queued.
    pub fn wait(&self, deadline: Option<Instant>) -> Drained {
        let mut g = self.lock();
        loop {
            if !g.items.is_empty() || g.lost || g.stop || g.failed.is_some() {
                break;
            }
            match deadline {
                None => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    g = self.cv.wait_timeout(g, d - now).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        let lost = std::mem::take(&mut g.lost);
        g.taken += g.items.len() + usize::from(lost);
        Drained {
            items: g.items.drain(..).collect(),
            lost,
            stop: g.stop,
            failed: g.failed.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ev(i: u8) -> Event {
        Event::Closed(vec![b'a', i])
    }

    #[test]
    fn a_full_queue_drops_and_reports_the_loss() {
        let q = Queue::new(2);
        for i in 0..5 {
            q.push(ev(i));
        }
        let d = q.wait(Some(Instant::now()));
        assert_eq!((d.items.len(), d.lost, d.stop), (2, true, false));
        let d = q.wait(Some(Instant::now()));
        assert_eq!((d.items.len(), d.lost), (0, false), "the loss is reported once");
    }

    #[test]
    fn a_failed_source_is_reported_until_the_engine_stops() {
        let q = Queue::new(2);
        q.fail("gone".into());
        q.fail("again".into());
        assert_eq!(q.wait(None).failed.as_deref(), Some("gone"));
        assert_eq!(q.wait(None).failed.as_deref(), Some("gone"));
    }

    #[test]
    fn wait_returns_at_the_deadline_or_when_woken() {
        let q = std::sync::Arc::new(Queue::new(8));
        let t0 = Instant::now();
        let d = q.wait(Some(t0 + Duration::from_millis(30)));
        assert!(d.items.is_empty() && t0.elapsed() >= Duration::from_millis(30));
        let q2 = q.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q2.stop();
        });
        assert!(q.wait(None).stop);
        h.join().unwrap();
    }
}
