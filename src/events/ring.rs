//! ring: a bot's recent events, kept once and read by every stream of the
//! bot (API.md, "Events": the last 10,000, fewer only when older than 10
//! minutes or past 64 MiB).
//!
//! Why frames, not events: each event is rendered once into the bytes a
//! stream writes (`id:`, `event:`, `data:` lines), shared by `Arc`, so a
//! thousand streams cost one copy and no re-serialisation.
//!
//! Invariants: IDs increase by one per event of the bot, with no gaps among
//! what is kept; a reader asks for what follows the last ID it wrote and is
//! told when that is no longer kept.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// API.md: "the bot's last 10,000 events ... older than 10 minutes or pass
/// 64 MiB".
pub const MAX_EVENTS: usize = 10_000;
pub const MAX_AGE: Duration = Duration::from_secs(10 * 60);
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// One event as streams send it.
#[derive(Debug)]
pub struct Frame {
    pub id: u64,
    /// The dispatch name (`MESSAGE_CREATE`) or the marker (`gateway.ready`).
    pub kind: Box<str>,
    pub guild_id: Option<u64>,
    pub channel_id: Option<u64>,
    /// The SSE frame: `id: …\nevent: …\ndata: …\n\n`.
    pub bytes: Box<[u8]>,
    /// Markers reach every stream whatever its filters.
    pub marker: bool,
    at: Instant,
}

/// What a reader gets.
#[derive(Debug)]
pub enum Read {
    /// The frames after its cursor (maybe none, after a timeout).
    Frames(Vec<Arc<Frame>>),
    /// Its cursor is older than anything kept: events were dropped before
    /// it read them. `resume_at` is the ID to continue from.
    Gap { resume_at: u64 },
}

struct Inner {
    frames: VecDeque<Arc<Frame>>,
    bytes: usize,
    /// The ID the next event gets.
    next_id: u64,
}

pub struct Ring {
    inner: Mutex<Inner>,
    arrived: Condvar,
    /// How long `start` waits for an ID past the last one given to arrive:
    /// in a cluster another instance may have sent it a moment before this
    /// one reads it from Redis (0 elsewhere: such an ID was never given).
    catch_up: Duration,
}

impl Ring {
    /// `first_id`: the ID the first event gets (IDs stay meaningful across a
    /// Gateway reconnect, and across a restart when the last one is kept).
    pub fn new(first_id: u64) -> Ring {
        Ring {
            inner: Mutex::new(Inner {
                frames: VecDeque::new(),
                bytes: 0,
                next_id: first_id.max(1),
            }),
            arrived: Condvar::new(),
            catch_up: Duration::ZERO,
        }
    }

    /// A ring fed from a cluster's shared stream (`cluster`).
    pub fn shared(first_id: u64, catch_up: Duration) -> Ring {
        Ring {
            catch_up,
            ..Ring::new(first_id)
        }
    }

    /// Appends an event: `render` gets its ID and returns the frame bytes.
    pub fn push(
        &self,
        kind: &str,
        guild_id: Option<u64>,
        channel_id: Option<u64>,
        marker: bool,
        render: impl FnOnce(u64) -> Vec<u8>,
    ) -> u64 {
        let inner = self.inner.lock();
        let id = inner.next_id;
        self.append(inner, id, kind, guild_id, channel_id, marker, render);
        id
    }

    /// Appends an event whose ID was given elsewhere (a cluster's stream):
    /// an ID already passed is ignored; one past the next expected means
    /// events were lost in between, so what is kept is dropped and readers
    /// before it are told of a gap.
    pub fn push_at(
        &self,
        id: u64,
        kind: &str,
        guild_id: Option<u64>,
        channel_id: Option<u64>,
        marker: bool,
        render: impl FnOnce(u64) -> Vec<u8>,
    ) {
        let mut inner = self.inner.lock();
        if id < inner.next_id {
            return;
        }
        if id > inner.next_id {
            inner.frames.clear();
            inner.bytes = 0;
        }
        self.append(inner, id, kind, guild_id, channel_id, marker, render);
    }

    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        mut inner: parking_lot::MutexGuard<'_, Inner>,
        id: u64,
        kind: &str,
        guild_id: Option<u64>,
        channel_id: Option<u64>,
        marker: bool,
        render: impl FnOnce(u64) -> Vec<u8>,
    ) {
        let now = Instant::now();
        inner.next_id = id + 1;
        let frame = Arc::new(Frame {
            id,
            kind: kind.into(),
            guild_id,
            channel_id,
            bytes: render(id).into_boxed_slice(),
            marker,
            at: now,
        });
        inner.bytes += frame.bytes.len();
        inner.frames.push_back(frame);
        while let Some(oldest) = inner.frames.front() {
            let over = inner.frames.len() > MAX_EVENTS
                || inner.bytes > MAX_BYTES
                || now.duration_since(oldest.at) > MAX_AGE;
            if !over {
                break;
            }
            inner.bytes -= oldest.bytes.len();
            inner.frames.pop_front();
        }
        drop(inner);
        self.arrived.notify_all();
    }

    /// The last ID given, 0 when none.
    pub fn last_id(&self) -> u64 {
        self.inner.lock().next_id - 1
    }

    /// Where a reader that last saw `last_seen` starts: `Ok(cursor)`, or
    /// `Err(cursor)` when events after it are no longer kept or the ID was
    /// never given (a gap; the reader starts at `cursor`).
    pub fn start(&self, last_seen: Option<u64>) -> Result<u64, u64> {
        let mut inner = self.inner.lock();
        let Some(seen) = last_seen else {
            return Ok(inner.next_id - 1);
        };
        let deadline = Instant::now() + self.catch_up;
        while seen >= inner.next_id && !self.arrived.wait_until(&mut inner, deadline).timed_out() {}
        let last = inner.next_id - 1;
        let oldest = inner.frames.front().map_or(inner.next_id, |f| f.id);
        if seen > last {
            Err(last)
        } else if seen + 1 < oldest {
            Err(oldest - 1)
        } else {
            Ok(seen)
        }
    }

    /// The frames after `cursor`, at most `max`; waits up to `wait` when
    /// there are none yet.
    pub fn read(&self, cursor: u64, max: usize, wait: Duration) -> Read {
        let mut inner = self.inner.lock();
        if inner.next_id - 1 <= cursor {
            self.arrived.wait_for(&mut inner, wait);
        }
        let oldest = inner.frames.front().map_or(inner.next_id, |f| f.id);
        if cursor + 1 < oldest {
            return Read::Gap {
                resume_at: oldest - 1,
            };
        }
        let skip = (cursor + 1 - oldest) as usize;
        Read::Frames(inner.frames.iter().skip(skip).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(ring: &Ring, n: usize) {
        for _ in 0..n {
            ring.push("MESSAGE_CREATE", None, None, false, |id| {
                format!("id: {id}\n\n").into_bytes()
            });
        }
    }

    fn ids(read: Read) -> Vec<u64> {
        match read {
            Read::Frames(frames) => frames.iter().map(|f| f.id).collect(),
            Read::Gap { .. } => panic!("a gap"),
        }
    }

    #[test]
    fn ids_increase_by_one_and_readers_get_what_follows_their_cursor() {
        let ring = Ring::new(1);
        push(&ring, 5);
        assert_eq!(ring.last_id(), 5);
        assert_eq!(ids(ring.read(2, 10, Duration::ZERO)), vec![3, 4, 5]);
        assert_eq!(ids(ring.read(2, 2, Duration::ZERO)), vec![3, 4]);
        assert!(ids(ring.read(5, 10, Duration::ZERO)).is_empty());
    }

    #[test]
    fn only_the_last_10000_are_kept_and_an_older_cursor_is_a_gap() {
        let ring = Ring::new(1);
        push(&ring, MAX_EVENTS + 5);
        assert!(matches!(
            ring.read(1, 10, Duration::ZERO),
            Read::Gap { resume_at: 5 }
        ));
        assert_eq!(ring.start(Some(1)), Err(5));
        assert_eq!(ring.start(Some(5)), Ok(5));
    }

    #[test]
    fn an_id_never_given_is_a_gap_from_the_latest() {
        let ring = Ring::new(1);
        push(&ring, 3);
        assert_eq!(ring.start(Some(99)), Err(3));
        assert_eq!(ring.start(None), Ok(3));
    }

    #[test]
    fn ids_continue_from_the_first_given() {
        let ring = Ring::new(1000);
        push(&ring, 1);
        assert_eq!(ring.last_id(), 1000);
    }

    fn push_at(ring: &Ring, id: u64) {
        ring.push_at(id, "MESSAGE_CREATE", None, None, false, |id| {
            format!("id: {id}\n\n").into_bytes()
        });
    }

    #[test]
    fn an_id_given_elsewhere_already_passed_is_ignored() {
        let ring = Ring::shared(1, Duration::ZERO);
        push_at(&ring, 1);
        push_at(&ring, 2);
        push_at(&ring, 2);
        assert_eq!(ids(ring.read(0, 10, Duration::ZERO)), vec![1, 2]);
    }

    #[test]
    fn an_id_given_elsewhere_past_the_next_drops_what_is_kept_and_readers_see_a_gap() {
        let ring = Ring::shared(1, Duration::ZERO);
        push_at(&ring, 1);
        push_at(&ring, 5);
        assert!(matches!(
            ring.read(1, 10, Duration::ZERO),
            Read::Gap { resume_at: 4 }
        ));
        assert_eq!(ids(ring.read(4, 10, Duration::ZERO)), vec![5]);
    }

    #[test]
    fn a_shared_ring_waits_briefly_for_an_id_another_instance_sent() {
        let ring = Arc::new(Ring::shared(1, Duration::from_secs(5)));
        let writer = Arc::clone(&ring);
        let pushed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            push_at(&writer, 1);
            push_at(&writer, 2);
        });
        assert_eq!(ring.start(Some(2)), Ok(2));
        pushed.join().unwrap();
    }

    #[test]
    fn a_waiting_reader_wakes_when_an_event_arrives() {
        let ring = Arc::new(Ring::new(1));
        let writer = Arc::clone(&ring);
        let pushed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            push(&writer, 1);
        });
        let started = Instant::now();
        assert_eq!(ids(ring.read(0, 10, Duration::from_secs(5))), vec![1]);
        assert!(started.elapsed() < Duration::from_secs(2));
        pushed.join().unwrap();
    }
}
