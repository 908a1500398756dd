//! `GET /v1/events`: the event stream as Server-Sent Events.
//!
//! Each SSE message has `id: <seq>` and `data: <event JSON>` (the [`Envelope`]). With
//! `?since=N` the stream starts with the events after `N` that the node still remembers,
//! so a client that reconnects misses nothing; without it, only new events come. A client
//! too slow to keep up gets a final `{"type":"Lagged","seq":N}` and the stream ends, so it
//! reconnects with `since` instead of silently missing events.

use crate::events::{Envelope, EventHub};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

fn to_sse(env: &Envelope) -> Event {
    Event::default()
        .id(env.seq.to_string())
        .data(serde_json::to_string(env).expect("events serialize"))
}

enum State {
    Backlog(
        std::vec::IntoIter<Arc<Envelope>>,
        tokio::sync::broadcast::Receiver<Arc<Envelope>>,
        u64,
    ),
    Live(tokio::sync::broadcast::Receiver<Arc<Envelope>>, u64),
    Done,
}

/// The SSE response for a subscription to `hub` after `since`.
pub fn stream(
    hub: &EventHub,
    since: Option<u64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let sub = hub.subscribe(since);
    // Live events up to the subscription point are in the backlog (or were not asked for).
    let state = State::Backlog(sub.backlog.into_iter(), sub.live, sub.last_seq);
    let events = stream::unfold(state, |state| async move {
        match state {
            State::Backlog(mut backlog, live, last) => match backlog.next() {
                Some(env) => Some((Ok(to_sse(&env)), State::Backlog(backlog, live, last))),
                None => next_live(live, last).await,
            },
            State::Live(live, last) => next_live(live, last).await,
            State::Done => None,
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn next_live(
    mut live: tokio::sync::broadcast::Receiver<Arc<Envelope>>,
    last: u64,
) -> Option<(Result<Event, Infallible>, State)> {
    loop {
        match live.recv().await {
            // Already delivered from the backlog.
            Ok(env) if env.seq <= last => continue,
            Ok(env) => {
                let seq = env.seq;
                return Some((Ok(to_sse(&env)), State::Live(live, seq)));
            }
            Err(RecvError::Lagged(_)) => {
                let data = serde_json::json!({"type": "Lagged", "seq": last}).to_string();
                return Some((Ok(Event::default().data(data)), State::Done));
            }
            Err(RecvError::Closed) => return None,
        }
    }
}
