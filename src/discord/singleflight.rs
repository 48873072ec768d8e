//! singleflight: one call in flight for many callers who want the same
//! answer. A login checks its token with `GET /users/@me`; forty clients
//! logging in with one token at once should cost Discord one call, not
//! forty calls queued on the bot's rate limit, each holding a worker.
//!
//! Architecture invariants: a waiter waits until its own deadline at most;
//! a leader that panics releases its waiters (they get `None`), and the
//! next caller starts a new flight.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Callers of `run` while a flight is out share its answer.
pub struct SingleFlight<T> {
    current: Mutex<Option<Arc<Flight<T>>>>,
}

struct Flight<T> {
    outcome: Mutex<Outcome<T>>,
    landed: Condvar,
}

enum Outcome<T> {
    Pending,
    Landed(T),
    /// The leader panicked.
    Lost,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            current: Mutex::new(None),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    /// Runs `work` unless a flight is out, in which case waits for its
    /// answer until `deadline`. `None` when the wait ran out or the leader
    /// panicked.
    pub fn run(&self, deadline: Instant, work: impl FnOnce() -> T) -> Option<T> {
        let (flight, leader) = {
            let mut current = self.current.lock();
            match &*current {
                Some(flight) => (Arc::clone(flight), false),
                None => {
                    let flight = Arc::new(Flight {
                        outcome: Mutex::new(Outcome::Pending),
                        landed: Condvar::new(),
                    });
                    *current = Some(Arc::clone(&flight));
                    (flight, true)
                }
            }
        };
        if leader {
            let mut landing = Landing {
                owner: self,
                flight: &flight,
                value: None,
            };
            let value = work();
            landing.value = Some(value.clone());
            return Some(value);
        }
        let mut outcome = flight.outcome.lock();
        loop {
            match &*outcome {
                Outcome::Landed(value) => return Some(value.clone()),
                Outcome::Lost => return None,
                Outcome::Pending => {
                    if flight.landed.wait_until(&mut outcome, deadline).timed_out() {
                        return match &*outcome {
                            Outcome::Landed(value) => Some(value.clone()),
                            _ => None,
                        };
                    }
                }
            }
        }
    }
}

/// Ends the leader's flight when it is dropped, with its value or, after a
/// panic, as lost.
struct Landing<'a, T> {
    owner: &'a SingleFlight<T>,
    flight: &'a Arc<Flight<T>>,
    value: Option<T>,
}

impl<T> Drop for Landing<'_, T> {
    fn drop(&mut self) {
        let mut current = self.owner.current.lock();
        if current
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            *current = None;
        }
        drop(current);
        *self.flight.outcome.lock() = match self.value.take() {
            Some(value) => Outcome::Landed(value),
            None => Outcome::Lost,
        };
        self.flight.landed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn callers_during_a_flight_share_its_answer() {
        let flights = SingleFlight::default();
        let calls = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        std::thread::scope(|scope| {
            let answers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        flights.run(deadline, || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            42
                        })
                    })
                })
                .collect();
            for answer in answers {
                assert_eq!(answer.join().unwrap(), Some(42));
            }
        });
        assert!(
            calls.load(Ordering::SeqCst) < 8,
            "the flight was not shared"
        );
    }

    #[test]
    fn a_new_flight_starts_once_the_last_landed() {
        let flights = SingleFlight::default();
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(flights.run(deadline, || 1), Some(1));
        assert_eq!(flights.run(deadline, || 2), Some(2));
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline() {
        let flights = SingleFlight::default();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                flights.run(Instant::now() + Duration::from_secs(5), || {
                    std::thread::sleep(Duration::from_millis(500));
                    1
                })
            });
            std::thread::sleep(Duration::from_millis(50));
            let waited = flights.run(Instant::now() + Duration::from_millis(50), || 2);
            assert_eq!(waited, None);
        });
    }

    #[test]
    fn a_leader_that_panics_releases_its_waiters_and_the_next_caller_flies() {
        let flights: SingleFlight<u32> = SingleFlight::default();
        std::thread::scope(|scope| {
            let leader = scope.spawn(|| {
                flights.run(Instant::now() + Duration::from_secs(5), || {
                    std::thread::sleep(Duration::from_millis(200));
                    panic!("a bug in the call");
                })
            });
            std::thread::sleep(Duration::from_millis(50));
            let waiter = flights.run(Instant::now() + Duration::from_secs(5), || 9);
            assert_eq!(waiter, None, "released, not left waiting");
            assert!(leader.join().is_err());
        });
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(flights.run(deadline, || 3), Some(3));
    }
}
