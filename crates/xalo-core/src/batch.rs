//! Batches cut from the work that is ready: a signature over many messages' hashes, one
//! commit for many requests' writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Let the tasks ready on this thread run, one turn of the scheduler at a time, for as
/// long as each turn adds to what `waiting` counts, at most `max_turns` times and until it
/// counts `cap`. Work arrives far more slowly than a batch of it runs: without these turns
/// a batch would rarely hold more than one. When nothing else is ready it comes straight
/// back after one turn.
///
/// A turn is not free when the thread has nothing else to run: tokio then polls its I/O
/// driver and wakes another worker thread for the yielded task, which finds nothing to do
/// and sleeps again (a lone exchange message spent a third of its thread switches on it).
/// A caller that knows nobody else can join passes no turns (see [`InFlight`]).
pub async fn gather<E>(
    max_turns: usize,
    cap: usize,
    mut waiting: impl FnMut() -> Result<usize, E>,
) -> Result<(), E> {
    let mut seen = waiting()?;
    for _ in 0..max_turns {
        if seen >= cap {
            break;
        }
        tokio::task::yield_now().await;
        let now = waiting()?;
        if now == seen {
            break;
        }
        seen = now;
    }
    Ok(())
}

/// How many units of work (a gateway's messages, say) are under way: a batch of their
/// parts is worth gathering only while more are under way than are waiting in it.
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// One unit of work under way, until dropped.
#[derive(Debug)]
pub struct Underway(Arc<AtomicUsize>);

impl InFlight {
    pub fn enter(&self) -> Underway {
        self.0.fetch_add(1, Ordering::Relaxed);
        Underway(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// The turns to let others take ([`gather`]) with `waiting` units in the batch: none
    /// when no other unit is under way.
    pub fn turns(&self, waiting: usize, max_turns: usize) -> usize {
        if self.count() > waiting { max_turns } else { 0 }
    }
}

/// [`InFlight::turns`] where the units under way may be unknown (then all `max_turns`).
pub fn turns(in_flight: Option<&InFlight>, waiting: usize, max_turns: usize) -> usize {
    in_flight.map_or(max_turns, |f| f.turns(waiting, max_turns))
}

impl Drop for Underway {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_taken_only_while_others_are_under_way() {
        let in_flight = InFlight::default();
        let first = in_flight.enter();
        assert_eq!(in_flight.turns(1, 4), 0);
        let second = in_flight.enter();
        assert_eq!((in_flight.count(), in_flight.turns(1, 4)), (2, 4));
        assert_eq!(in_flight.turns(2, 4), 0);
        drop(second);
        drop(first);
        assert_eq!(in_flight.count(), 0);
    }

    #[tokio::test]
    async fn gathering_stops_when_a_turn_adds_nothing() {
        let turns = std::sync::atomic::AtomicUsize::new(0);
        gather::<()>(4, 100, || Ok(turns.fetch_add(1, Ordering::Relaxed).min(1)))
            .await
            .unwrap();
        // Counted before, after one turn (more), after a second (the same): stop.
        assert_eq!(turns.load(Ordering::Relaxed), 3);
        let counted = std::sync::atomic::AtomicUsize::new(0);
        gather::<()>(0, 100, || Ok(counted.fetch_add(1, Ordering::Relaxed)))
            .await
            .unwrap();
        assert_eq!(counted.load(Ordering::Relaxed), 1);
    }
}
