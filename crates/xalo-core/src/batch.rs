//! Batches cut from the work that is ready: a signature over many messages' hashes, one
//! commit for many requests' writes.

/// Let the tasks ready on this thread run, one turn of the scheduler at a time, for as
/// long as each turn adds to what `waiting` counts, at most `max_turns` times and until it
/// counts `cap`. Work arrives far more slowly than a batch of it runs: without these turns
/// a batch would rarely hold more than one. When nothing else is ready it comes straight
/// back after one turn.
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
