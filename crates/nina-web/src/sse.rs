//! `/live/events`: one server-sent-events stream per page, with named events whose data are
//! HTML fragments for htmx's SSE extension to swap in:
//!
//! - `members`: recorded channels and their members, speakers marked (on change, and at most
//!   every [`LEVEL_PERIOD`](crate::live::LEVEL_PERIOD) while levels change);
//! - `utterance`: one finished utterance (numbered: the `id` field), newest first;
//! - `health`: connection, DAVE and backlog.
//!
//! A page that reconnects with `Last-Event-ID` (header, or `last_event_id` in the query for
//! clients that cannot set it) gets the utterances it missed that are still in the ring.

use std::collections::VecDeque;
use std::convert::Infallible;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::live::{Channel, Health, LEVEL_PERIOD, Levels, Stamped, Subscription};
use crate::pages::{PageError, clock};

/// Utterances sent to a page that connects without `Last-Event-ID`.
pub const RECENT: usize = 50;

struct MemberView {
    user: u64,
    name: String,
    speaking: bool,
}

struct ChannelView {
    title: String,
    session: String,
    members: Vec<MemberView>,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersFragment {
    channels: Vec<ChannelView>,
    at_ms: i64,
}

#[derive(Template)]
#[template(path = "utterance.html")]
struct UtteranceFragment<'a> {
    s: &'a Stamped,
    at: String,
}

#[derive(Template)]
#[template(path = "health.html")]
struct HealthFragment<'a> {
    h: &'a Health,
    pages: u64,
}

fn render(t: impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "live fragment failed");
        String::new()
    })
}

/// The `members` event for these channels and levels.
fn members(channels: &[Channel], levels: &Levels) -> Event {
    let channels = channels
        .iter()
        .map(|c| ChannelView {
            title: format!(
                "{} / {}",
                c.guild_name.clone().unwrap_or(c.guild_id.to_string()),
                c.channel_name.clone().unwrap_or(c.channel_id.to_string())
            ),
            session: c.session_id.clone(),
            members: c
                .members
                .iter()
                .map(|m| MemberView {
                    user: m.user_id,
                    name: m.name.clone(),
                    speaking: levels.get(&m.user_id).is_some_and(|l| *l > 0.0),
                })
                .collect(),
        })
        .collect();
    Event::default()
        .event("members")
        .data(render(MembersFragment {
            channels,
            at_ms: crate::live::now_ms(),
        }))
}

fn utterance(s: &Stamped) -> Event {
    Event::default()
        .id(s.id.to_string())
        .event("utterance")
        .data(render(UtteranceFragment {
            s,
            at: clock(s.utterance.start),
        }))
}

fn health(h: &Health, pages: u64) -> Event {
    Event::default()
        .event("health")
        .data(render(HealthFragment { h, pages }))
}

struct Feed {
    sub: Subscription,
    pending: VecDeque<Event>,
    last: u64,
    tick: tokio::time::Interval,
}

impl Feed {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            tokio::select! {
                r = self.sub.utterances.recv() => match r {
                    Ok(s) if s.id > self.last => {
                        self.last = s.id;
                        return Some(utterance(&s));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        for s in self.sub.hub().since(Some(self.last), usize::MAX) {
                            self.last = s.id;
                            self.pending.push_back(utterance(&s));
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                r = self.sub.channels.changed() => {
                    r.ok()?;
                    let c = self.sub.channels.borrow_and_update().clone();
                    let l = self.sub.levels.borrow_and_update().clone();
                    return Some(members(&c, &l));
                }
                r = self.sub.health.changed() => {
                    r.ok()?;
                    let h = self.sub.health.borrow_and_update().clone();
                    return Some(health(&h, self.sub.hub().pages()));
                }
                _ = self.tick.tick() => {
                    if self.sub.levels.has_changed().unwrap_or(false) {
                        let l = self.sub.levels.borrow_and_update().clone();
                        let c = self.sub.channels.borrow().clone();
                        return Some(members(&c, &l));
                    }
                }
            }
        }
    }
}

/// `/live/events` query.
#[derive(Debug, Deserialize, Default)]
pub struct EventsQuery {
    last_event_id: Option<u64>,
}

/// The id a reconnecting page last saw.
fn last_id(h: &HeaderMap, q: &EventsQuery) -> Option<u64> {
    h.get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(q.last_event_id)
}

/// `GET /live/events`.
pub async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let hub = st
        .hub()
        .ok_or(PageError::Unavailable(
            "no recorder here: this server shows stored sessions",
        ))?
        .clone();
    // Subscribe first, then read the ring: nothing falls between them (duplicates are skipped
    // by id).
    let mut sub = hub.subscribe();
    let after = last_id(&headers, &q);
    let mut pending = VecDeque::new();
    let channels = sub.channels.borrow_and_update().clone();
    let levels = sub.levels.borrow_and_update().clone();
    pending.push_back(members(&channels, &levels).retry(std::time::Duration::from_secs(1)));
    let h = sub.health.borrow_and_update().clone();
    pending.push_back(health(&h, hub.pages()));
    let mut last = after.unwrap_or(0);
    let replay = hub.since(after, if after.is_some() { usize::MAX } else { RECENT });
    for s in &replay {
        last = s.id;
        pending.push_back(utterance(s));
    }
    let mut tick = tokio::time::interval(LEVEL_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let feed = Feed {
        sub,
        pending,
        last,
        tick,
    };
    let stream =
        futures_util::stream::unfold(
            feed,
            |mut f| async move { f.next().await.map(|e| (Ok(e), f)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_from_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(last_id(&h, &EventsQuery::default()), None);
        assert_eq!(
            last_id(
                &h,
                &EventsQuery {
                    last_event_id: Some(4)
                }
            ),
            Some(4)
        );
        h.insert("last-event-id", "7".parse().unwrap());
        assert_eq!(last_id(&h, &EventsQuery::default()), Some(7));
        h.insert("last-event-id", "x".parse().unwrap());
        assert_eq!(last_id(&h, &EventsQuery::default()), None);
    }
}
