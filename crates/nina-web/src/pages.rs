//! The pages and files: handlers and their templates.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use askama::Template;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Form, Path as UrlPath, Query, Request, State};
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use nina_index::{Filter, Index, SessionData};
use nina_store::{Session, SessionDir};
use serde::Deserialize;
use tower::ServiceExt;

use crate::AppState;
use crate::paths::{self, PathError, SessionFile};

/// Sessions per page of `/sessions`.
pub const PAGE: usize = 50;
/// Search hits shown.
pub const HITS: usize = 50;

/// Why a page could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// A bad parameter.
    #[error("{0}")]
    BadRequest(String),
    /// No such thing.
    #[error("not found")]
    NotFound,
    /// No index yet.
    #[error("no search index in the data directory yet: run `reprocess index DATA`")]
    NoIndex,
    /// Not available on this server.
    #[error("{0}")]
    Unavailable(&'static str),
    /// Anything else (logged, not shown).
    #[error("internal error")]
    Internal(String),
}

impl From<nina_index::IndexError> for PageError {
    fn from(e: nina_index::IndexError) -> Self {
        match e {
            nina_index::IndexError::Missing(_) => Self::NoIndex,
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<rusqlite::Error> for PageError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<PathError> for PageError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::BadId => Self::BadRequest("bad session id".into()),
            _ => Self::NotFound,
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<nina_store::StoreError> for PageError {
    fn from(e: nina_store::StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::NoIndex | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(e) => {
                tracing::warn!(error = %e, "page failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            message: self.to_string(),
        };
        match page.render() {
            Ok(h) => (status, Html(h)).into_response(),
            Err(_) => (status, self.to_string()).into_response(),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    message: String,
}

type PageResult = Result<Response, PageError>;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?
}

fn html(t: impl Template) -> PageResult {
    Ok(Html(t.render()?).into_response())
}

/// `/`: the live view when recording, else the sessions.
pub async fn home(State(st): State<AppState>) -> Redirect {
    if st.hub().is_some() {
        Redirect::to("/live")
    } else {
        Redirect::to("/sessions")
    }
}

/// `/assets/{name}`.
pub async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    crate::assets::serve(&name)
}

fn opt_u64(v: &Option<String>, what: &str) -> Result<Option<u64>, PageError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| PageError::BadRequest(format!("{what}: not a number"))),
    }
}

/// `mm:ss` or `h:mm:ss`.
pub fn clock(seconds: f64) -> String {
    let t = seconds.max(0.0) as u64;
    if t >= 3600 {
        format!("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
    } else {
        format!("{}:{:02}", t / 60, t % 60)
    }
}

fn when(ms: i64) -> String {
    let t = nina_index::format_time(ms);
    t.get(..16).unwrap_or(&t).replace('T', " ")
}

// ---------------------------------------------------------------------------------------------
// /sessions

/// `/sessions` filters.
#[derive(Debug, Deserialize, Default, Clone)]
pub struct SessionsQuery {
    guild: Option<String>,
    channel: Option<String>,
    user: Option<String>,
    date: Option<String>,
    page: Option<String>,
}

struct Row {
    id: String,
    when: String,
    guild: String,
    channel: String,
    length: String,
    people: String,
    segments: i64,
}

struct Choice {
    value: String,
    label: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    rows: Vec<Row>,
    total: i64,
    page: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
    guilds: Vec<Choice>,
    channels: Vec<Choice>,
    user: String,
    date: String,
}

fn sessions_page(st: &AppState, q: SessionsQuery) -> Result<SessionsPage, PageError> {
    let guild = opt_u64(&q.guild, "guild")?;
    let channel = opt_u64(&q.channel, "channel")?;
    let user = opt_u64(&q.user, "user")?;
    let page = opt_u64(&q.page, "page")?.unwrap_or(1).clamp(1, 1_000_000) as usize;
    let (since, until) = match q.date.as_deref().map(str::trim) {
        None | Some("") => (None, None),
        Some(d) => {
            let (ms, _) = nina_index::parse_time(d)
                .map_err(|_| PageError::BadRequest("date: YYYY-MM-DD".into()))?;
            (Some(ms), Some(ms + 86_400_000))
        }
    };
    let index = Index::open_read_only(st.data())?;
    let c = index.connection();
    let filter = "(?1 IS NULL OR s.guild = ?1) AND (?2 IS NULL OR s.channel = ?2)
        AND (?3 IS NULL OR s.started_at_ms >= ?3) AND (?4 IS NULL OR s.started_at_ms < ?4)
        AND (?5 IS NULL OR EXISTS (SELECT 1 FROM participants p WHERE p.session = s.id AND p.user_id = ?5))";
    let g = guild.map(|v| v as i64);
    let ch = channel.map(|v| v as i64);
    let u = user.map(|v| v as i64);
    let total: i64 = c.query_row(
        &format!("SELECT count(*) FROM sessions s WHERE {filter}"),
        rusqlite::params![g, ch, since, until, u],
        |r| r.get(0),
    )?;
    let mut stmt = c.prepare(&format!(
        "SELECT s.session_id, s.guild, s.guild_name, s.channel, s.channel_name, s.started_at_ms,
                s.ended_at_ms,
                (SELECT group_concat(coalesce(p.display_name, p.user_id), ', ')
                   FROM participants p WHERE p.session = s.id),
                (SELECT count(*) FROM segments x WHERE x.session = s.id)
           FROM sessions s WHERE {filter}
          ORDER BY s.started_at_ms DESC, s.id DESC LIMIT ?6 OFFSET ?7"
    ))?;
    let rows = stmt
        .query_map(
            rusqlite::params![
                g,
                ch,
                since,
                until,
                u,
                PAGE as i64,
                ((page - 1) * PAGE) as i64
            ],
            |r| {
                let gid: i64 = r.get(1)?;
                let gname: Option<String> = r.get(2)?;
                let cid: i64 = r.get(3)?;
                let cname: Option<String> = r.get(4)?;
                let start: i64 = r.get(5)?;
                let end: Option<i64> = r.get(6)?;
                Ok(Row {
                    id: r.get(0)?,
                    when: when(start),
                    guild: gname.unwrap_or_else(|| gid.to_string()),
                    channel: cname.unwrap_or_else(|| cid.to_string()),
                    length: end
                        .map(|e| clock((e - start) as f64 / 1000.0))
                        .unwrap_or_else(|| "…".into()),
                    people: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                    segments: r.get(8)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let choices = |sql: &str, sel: Option<u64>| -> Result<Vec<Choice>, PageError> {
        let mut s = c.prepare(sql)?;
        let v = s
            .query_map([], |r| {
                let id: i64 = r.get(0)?;
                let name: Option<String> = r.get(1)?;
                Ok(Choice {
                    value: id.to_string(),
                    label: name
                        .map(|n| format!("{n} ({id})"))
                        .unwrap_or(id.to_string()),
                    selected: sel == Some(id as u64),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    };
    let guilds = choices(
        "SELECT guild, max(guild_name) FROM sessions GROUP BY guild ORDER BY guild LIMIT 500",
        guild,
    )?;
    let channels = choices(
        "SELECT channel, max(channel_name) FROM sessions GROUP BY channel ORDER BY channel LIMIT 500",
        channel,
    )?;
    let pages = (total as usize).div_ceil(PAGE).max(1);
    let link = |p: usize| {
        let mut s = format!("/sessions?page={p}");
        for (k, v) in [
            ("guild", &q.guild),
            ("channel", &q.channel),
            ("user", &q.user),
            ("date", &q.date),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                s.push_str(&format!("&{k}={}", url_escape(v)));
            }
        }
        s
    };
    Ok(SessionsPage {
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
        rows,
        total,
        page,
        pages,
        guilds,
        channels,
        user: user.map(|u| u.to_string()).unwrap_or_default(),
        date: q.date.unwrap_or_default(),
    })
}

/// Percent-encodes all but unreserved characters.
pub fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET /sessions`.
pub async fn sessions(State(st): State<AppState>, Query(q): Query<SessionsQuery>) -> PageResult {
    html(blocking(move || sessions_page(&st, q)).await?)
}

// ---------------------------------------------------------------------------------------------
// /s/{id}

fn find_session(st: &AppState, id: &str) -> Result<SessionDir, PageError> {
    paths::check_id(id)?;
    let index = Index::open_read_only(st.data())?;
    let rel: Option<String> = index
        .connection()
        .query_row(
            "SELECT path FROM sessions WHERE session_id = ?1 ORDER BY started_at_ms LIMIT 1",
            [id],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let rel = rel.ok_or(PageError::NotFound)?;
    Ok(paths::session_dir(st.data(), &rel)?)
}

struct Lane {
    user: u64,
    name: String,
    has_track: bool,
}

struct Line {
    n: usize,
    start: f64,
    end: f64,
    at: String,
    speaker: String,
    text: String,
}

#[derive(Template)]
#[template(path = "session.html")]
struct SessionPage {
    id: String,
    title: String,
    when: String,
    length: String,
    duration: f64,
    has_mix: bool,
    lanes: Vec<Lane>,
    lines: Vec<Line>,
    speakers: Vec<String>,
    transcripts: Vec<&'static str>,
}

fn lanes_of(s: &Session, dir: &SessionDir) -> Vec<Lane> {
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    for p in &s.participants {
        names.insert(
            p.user_id,
            p.display_name
                .clone()
                .unwrap_or_else(|| p.user_id.to_string()),
        );
    }
    for u in &s.utterances {
        names
            .entry(u.user_id)
            .or_insert_with(|| u.user_id.to_string());
    }
    names
        .into_iter()
        .filter(|(u, _)| s.utterances.iter().any(|x| x.user_id == *u))
        .map(|(user, name)| Lane {
            user,
            name,
            has_track: paths::existing(dir, SessionFile::Track(user)).is_ok(),
        })
        .collect()
}

fn session_page(st: &AppState, id: String) -> Result<SessionPage, PageError> {
    let dir = find_session(st, &id)?;
    let data = SessionData::read(&dir)?;
    let s = &data.session;
    let duration = nina_store::peaks::session_seconds(s);
    let lines = data
        .segments
        .iter()
        .enumerate()
        .map(|(n, g)| Line {
            n,
            start: g.start,
            end: g.end,
            at: clock(g.start),
            speaker: g.speaker.clone(),
            text: g.text.clone(),
        })
        .collect();
    let speakers = data
        .speakers
        .iter()
        .map(|sp| {
            let who = s
                .participants
                .iter()
                .find(|p| p.user_id == sp.stream_user)
                .and_then(|p| p.display_name.clone())
                .unwrap_or_else(|| sp.stream_user.to_string());
            format!("{} — in {}'s stream, {:.0} s", sp.name, who, sp.seconds)
        })
        .collect();
    let transcripts = ["txt", "srt", "vtt", "json"]
        .into_iter()
        .filter(|e| SessionFile::transcript(e).is_some_and(|f| paths::existing(&dir, f).is_ok()))
        .collect();
    let place = |p: &nina_store::Place| p.name.clone().unwrap_or_else(|| p.id.to_string());
    Ok(SessionPage {
        title: format!("{} / {}", place(&s.guild), place(&s.channel)),
        when: when(s.started_at_ms),
        length: clock(duration),
        duration,
        has_mix: paths::existing(&dir, SessionFile::Mix).is_ok(),
        lanes: lanes_of(s, &dir),
        lines,
        speakers,
        transcripts,
        id,
    })
}

/// `GET /s/{id}`.
pub async fn session(State(st): State<AppState>, UrlPath(id): UrlPath<String>) -> PageResult {
    html(blocking(move || session_page(&st, id)).await?)
}

/// Serves a file of a session with range requests, uncompressed.
async fn serve_file(st: AppState, id: String, f: SessionFile, req: Request) -> PageResult {
    let path = blocking(move || {
        let dir = find_session(&st, &id)?;
        Ok(paths::existing(&dir, f)?)
    })
    .await?;
    let mut r = tower_http::services::ServeFile::new_with_mime(
        &path,
        &f.content_type()
            .parse()
            .map_err(|_| PageError::Internal("mime".into()))?,
    )
    .oneshot(req)
    .await
    .map_err(|e| PageError::Internal(e.to_string()))?
    .map(Body::new);
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if matches!(f, SessionFile::Transcript(_)) {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    Ok(r)
}

/// `GET /s/{id}/audio/mix`.
pub async fn audio_mix(
    State(st): State<AppState>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> PageResult {
    serve_file(st, id, SessionFile::Mix, req).await
}

/// `GET /s/{id}/audio/user/{user}`.
pub async fn audio_user(
    State(st): State<AppState>,
    UrlPath((id, user)): UrlPath<(String, String)>,
    req: Request,
) -> PageResult {
    let user = user
        .parse()
        .map_err(|_| PageError::BadRequest("bad user id".into()))?;
    serve_file(st, id, SessionFile::Track(user), req).await
}

/// `GET /s/{id}/transcript/{ext}`.
pub async fn transcript(
    State(st): State<AppState>,
    UrlPath((id, ext)): UrlPath<(String, String)>,
    req: Request,
) -> PageResult {
    let f = SessionFile::transcript(&ext).ok_or(PageError::NotFound)?;
    serve_file(st, id, f, req).await
}

/// `GET /s/{id}/peaks/{user}`: the stored peaks, else computed now from the utterances (not
/// stored: `reprocess peaks` writes them).
pub async fn peaks(
    State(st): State<AppState>,
    UrlPath((id, user)): UrlPath<(String, String)>,
    req: Request,
) -> PageResult {
    let user: u64 = user
        .parse()
        .map_err(|_| PageError::BadRequest("bad user id".into()))?;
    let st2 = st.clone();
    let id2 = id.clone();
    let computed = blocking(move || {
        let dir = find_session(&st2, &id2)?;
        if paths::existing(&dir, SessionFile::Peaks(user)).is_ok() {
            return Ok(None);
        }
        let s = dir.load()?;
        if !s.utterances.iter().any(|u| u.user_id == user) {
            return Err(PageError::NotFound);
        }
        let mut all = nina_store::peaks::compute_session(&dir, &s)
            .map_err(|e| PageError::Internal(e.to_string()))?;
        Ok(all.remove(&user).map(|p| p.to_bytes()))
    })
    .await?;
    match computed {
        None => serve_file(st, id, SessionFile::Peaks(user), req).await,
        Some(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
    }
}

/// `GET /s/{id}/tracks.zip`: every user's FLAC track, streamed as each is made.
pub async fn tracks_zip(State(st): State<AppState>, UrlPath(id): UrlPath<String>) -> PageResult {
    let (dir, s) = blocking(move || {
        let dir = find_session(&st, &id)?;
        let s = dir.load()?;
        Ok((dir, s))
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(8);
    let name = format!("attachment; filename=\"{}-tracks.zip\"", s.id);
    tokio::task::spawn_blocking(move || {
        let w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        if let Err(e) = crate::download::write_users_zip(&dir, &s, w) {
            tracing::warn!(error = %e, "zip download stopped");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// A `Write` that sends 64 KiB chunks to the response body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 64 << 10 {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

// ---------------------------------------------------------------------------------------------
// /search

/// `/search` parameters.
#[derive(Debug, Deserialize, Default)]
pub struct SearchQuery {
    q: Option<String>,
    guild: Option<String>,
    channel: Option<String>,
    user: Option<String>,
}

struct Piece {
    text: String,
    hit: bool,
}

struct HitView {
    link: String,
    session: String,
    at: String,
    speaker: String,
    pieces: Vec<Piece>,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    q: String,
    hits: Vec<HitView>,
    searched: bool,
    error: Option<String>,
}

fn pieces(text: &str, marks: &[[usize; 2]]) -> Vec<Piece> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    for [a, b] in marks {
        let (a, b) = ((*a).min(chars.len()), (*b).min(chars.len()));
        if a < at || b <= a {
            continue;
        }
        if a > at {
            out.push(Piece {
                text: chars[at..a].iter().collect(),
                hit: false,
            });
        }
        out.push(Piece {
            text: chars[a..b].iter().collect(),
            hit: true,
        });
        at = b;
    }
    if at < chars.len() {
        out.push(Piece {
            text: chars[at..].iter().collect(),
            hit: false,
        });
    }
    out
}

fn search_page(st: &AppState, q: SearchQuery) -> Result<SearchPage, PageError> {
    let text = q.q.clone().unwrap_or_default();
    let mut page = SearchPage {
        q: text.clone(),
        hits: Vec::new(),
        searched: false,
        error: None,
    };
    if text.trim().is_empty() {
        return Ok(page);
    }
    let query = match nina_index::Query::parse(&text) {
        Ok(q) => q,
        Err(e) => {
            page.error = Some(e.to_string());
            return Ok(page);
        }
    };
    let filter = Filter {
        guild: opt_u64(&q.guild, "guild")?,
        channel: opt_u64(&q.channel, "channel")?,
        user: opt_u64(&q.user, "user")?,
        ..Filter::default()
    };
    let index = Index::open_read_only(st.data())?;
    let hits = index.search(&query, &filter, HITS)?;
    page.searched = true;
    page.hits = hits
        .into_iter()
        .map(|h| HitView {
            link: format!("/s/{}#t={:.2}", url_escape(&h.session.id), h.start),
            session: h.session.id.clone(),
            at: format!(
                "{} +{}",
                h.session
                    .started_at
                    .get(..16)
                    .unwrap_or("")
                    .replace('T', " "),
                clock(h.start)
            ),
            speaker: h.speaker.clone(),
            pieces: pieces(&h.text, &h.marks),
        })
        .collect();
    Ok(page)
}

/// `GET /search?q=…`.
pub async fn search(State(st): State<AppState>, Query(q): Query<SearchQuery>) -> PageResult {
    html(blocking(move || search_page(&st, q)).await?)
}

// ---------------------------------------------------------------------------------------------
// /forget

/// `/forget` parameters.
#[derive(Debug, Deserialize, Default)]
pub struct ForgetQuery {
    user: Option<String>,
    guild: Option<String>,
    confirm: Option<String>,
}

#[derive(Template)]
#[template(path = "forget.html")]
struct ForgetPage {
    user: String,
    guild: String,
    sessions: i64,
    names: String,
    enabled: bool,
    done: Option<String>,
    failed: Option<String>,
}

fn forget_page(st: &AppState, q: &ForgetQuery) -> Result<ForgetPage, PageError> {
    let user = opt_u64(&q.user, "user")?;
    let guild = opt_u64(&q.guild, "guild")?;
    let (mut sessions, mut names) = (0, String::new());
    if let Some(u) = user {
        match Index::open_read_only(st.data()) {
            Ok(index) => {
                let c = index.connection();
                let g = guild.map(|g| g as i64);
                sessions = c.query_row(
                    "SELECT count(DISTINCT p.session) FROM participants p JOIN sessions s ON s.id = p.session
                      WHERE p.user_id = ?1 AND (?2 IS NULL OR s.guild = ?2)",
                    rusqlite::params![u as i64, g],
                    |r| r.get(0),
                )?;
                names = c.query_row(
                    "SELECT coalesce(group_concat(DISTINCT display_name), '') FROM participants WHERE user_id = ?1",
                    [u as i64],
                    |r| r.get(0),
                )?;
            }
            Err(nina_index::IndexError::Missing(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ForgetPage {
        user: user.map(|u| u.to_string()).unwrap_or_default(),
        guild: guild.map(|g| g.to_string()).unwrap_or_default(),
        sessions,
        names,
        enabled: st.forgetter().is_some(),
        done: None,
        failed: None,
    })
}

/// `GET /forget?user=…`: the confirmation step.
pub async fn forget_form(State(st): State<AppState>, Query(q): Query<ForgetQuery>) -> PageResult {
    html(blocking(move || forget_page(&st, &q)).await?)
}

/// `POST /forget` (`user`, `guild`, `confirm` = the user id typed again): erases and records
/// it in the audit log.
pub async fn forget_post(
    State(st): State<AppState>,
    ext: Extensions,
    Form(q): Form<ForgetQuery>,
) -> PageResult {
    let peer = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let page = blocking(move || {
        let mut page = forget_page(&st, &q)?;
        let Some(f) = st.forgetter().cloned() else {
            return Err(PageError::Unavailable(
                "erasure is done by `reprocess serve` (not while recording)",
            ));
        };
        let user: u64 = opt_u64(&q.user, "user")?
            .ok_or_else(|| PageError::BadRequest("user: required".into()))?;
        let guild = opt_u64(&q.guild, "guild")?;
        if q.confirm.as_deref().map(str::trim) != Some(user.to_string().as_str()) {
            return Err(PageError::BadRequest(
                "type the user id again to confirm".into(),
            ));
        }
        let result = f.forget(st.data(), user, guild);
        let (outcome, detail) = match &result {
            Ok(d) => ("ok", d.clone()),
            Err(e) => ("error", e.clone()),
        };
        let rec = crate::audit::Record {
            at_ms: crate::live::now_ms(),
            action: "forget".into(),
            user,
            guild,
            peer,
            outcome: outcome.into(),
            detail,
        };
        crate::audit::append(st.data(), &rec)
            .map_err(|e| PageError::Internal(format!("audit log: {e}")))?;
        tracing::info!(user, outcome, "forget requested from the web page");
        match result {
            Ok(d) => page.done = Some(d),
            Err(e) => page.failed = Some(e),
        }
        page.sessions = 0;
        Ok(page)
    })
    .await?;
    html(page)
}

// ---------------------------------------------------------------------------------------------
// /live

#[derive(Template)]
#[template(path = "live.html")]
struct LivePage {
    live: bool,
}

/// `GET /live`.
pub async fn live(State(st): State<AppState>) -> PageResult {
    html(LivePage {
        live: st.hub().is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks() {
        assert_eq!(clock(0.0), "0:00");
        assert_eq!(clock(61.9), "1:01");
        assert_eq!(clock(3661.0), "1:01:01");
        assert_eq!(clock(-5.0), "0:00");
    }

    #[test]
    fn highlight_pieces() {
        let p = pieces("héllo wörld", &[[0, 5], [6, 11]]);
        let v: Vec<(String, bool)> = p.into_iter().map(|p| (p.text, p.hit)).collect();
        assert_eq!(
            v,
            vec![
                ("héllo".into(), true),
                (" ".into(), false),
                ("wörld".into(), true)
            ]
        );
        // Hostile marks never panic.
        assert_eq!(pieces("ab", &[[5, 9], [1, 0]]).len(), 1);
    }

    #[test]
    fn url_escaping() {
        assert_eq!(url_escape("a b/c&d"), "a%20b%2Fc%26d");
    }
}
