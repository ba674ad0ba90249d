//! Nina's web page for operators, served by the collector (live view) and by
//! `reprocess serve --data DIR` (stored sessions).
//!
//! Pages (rendered on the server with askama templates, checked at compile time):
//! `/live` (recorded channels, who speaks, utterances as they finish, health; one
//! server-sent-events stream per page), `/sessions` (list and filters, from the index),
//! `/s/{id}` (one lane per user with server-computed peaks, playback of the mix or one user,
//! transcript synced to playback, downloads), `/search` (highlighted snippets linking to the
//! moment) and `/forget` (erasure of a user, with confirmation, audited).
//!
//! Safe by default: bound to loopback unless a token is set ([`auth`]), cross-site
//! state-changing requests refused (tower-http's `CsrfLayer`), and only files of the session
//! layout served ([`paths`]). Audio is served with range requests and never compressed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub mod assets;
pub mod audit;
pub mod auth;
pub mod download;
pub mod live;
mod pages;
pub mod paths;
pub use nina_store::peaks;
mod sse;

pub use live::{Channel, Health, LiveHub, Member, Utterance};
pub use nina_store::peaks::{Peaks, PeaksBuilder};

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The listen address or token was refused.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The data directory is missing.
    #[error("data directory {0}: {1}")]
    Data(PathBuf, std::io::Error),
    /// The address could not be bound.
    #[error("listening on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Erasure of a user, supplied by the program that serves (it owns the erasure code).
pub trait Forget: Send + Sync + 'static {
    /// Removes `user` (in `guild` only, if given) from the data directory; returns a short
    /// summary, or why it failed.
    fn forget(&self, data: &Path, user: u64, guild: Option<u64>) -> Result<String, String>;
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The data directory (sessions, index).
    pub data: PathBuf,
    /// Listen address (loopback unless a token is set).
    pub listen: SocketAddr,
    /// Access token; required for a non-loopback address.
    pub token: Option<String>,
}

impl WebConfig {
    /// Serving `data` on `127.0.0.1:port` without a token.
    pub fn loopback(data: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            data: data.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            token: None,
        }
    }
}

/// Reads an access token kept in a file (surrounding whitespace and the newline dropped).
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

struct Inner {
    data: PathBuf,
    token: Option<String>,
    hub: Option<LiveHub>,
    forget: Option<Arc<dyn Forget>>,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// The data directory (canonical).
    pub fn data(&self) -> &Path {
        &self.0.data
    }
    /// The access token, if any.
    pub fn token(&self) -> Option<&str> {
        self.0.token.as_deref()
    }
    /// The live hub, when serving a recorder.
    pub fn hub(&self) -> Option<&LiveHub> {
        self.0.hub.as_ref()
    }
    /// The erasure, when allowed.
    pub fn forgetter(&self) -> Option<&Arc<dyn Forget>> {
        self.0.forget.as_ref()
    }
}

/// The server: configure, then [`Web::bind`] and serve.
pub struct Web {
    config: WebConfig,
    hub: Option<LiveHub>,
    forget: Option<Arc<dyn Forget>>,
}

impl Web {
    /// A server for `config`; refuses a non-loopback address without a token.
    pub fn new(config: WebConfig) -> Result<Self, WebError> {
        auth::check_listen(config.listen, config.token.as_deref())?;
        Ok(Self {
            config,
            hub: None,
            forget: None,
        })
    }

    /// Shows the live view from `hub`.
    pub fn with_hub(mut self, hub: LiveHub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Allows erasure through `forget`.
    pub fn with_forget(mut self, forget: Arc<dyn Forget>) -> Self {
        self.forget = Some(forget);
        self
    }

    /// The routes (for tests, or to mount elsewhere).
    pub fn router(&self) -> Result<Router, WebError> {
        let data = std::fs::canonicalize(&self.config.data)
            .map_err(|e| WebError::Data(self.config.data.clone(), e))?;
        let st = AppState(Arc::new(Inner {
            data,
            token: self.config.token.clone(),
            hub: self.hub.clone(),
            forget: self.forget.clone(),
        }));
        Ok(Router::new()
            .route("/", get(pages::home))
            .route("/login", get(auth::login))
            .route("/sessions", get(pages::sessions))
            .route("/s/{id}", get(pages::session))
            .route("/s/{id}/audio/mix", get(pages::audio_mix))
            .route("/s/{id}/audio/user/{user}", get(pages::audio_user))
            .route("/s/{id}/peaks/{user}", get(pages::peaks))
            .route("/s/{id}/transcript/{ext}", get(pages::transcript))
            .route("/s/{id}/tracks.zip", get(pages::tracks_zip))
            .route("/search", get(pages::search))
            .route("/forget", get(pages::forget_form).post(pages::forget_post))
            .route("/live", get(pages::live))
            .route("/live/events", get(sse::events))
            .route("/assets/{name}", get(pages::asset))
            .layer(axum::middleware::from_fn_with_state(
                st.clone(),
                auth::guard,
            ))
            .layer(tower_http::csrf::CsrfLayer::new().with_rejection_response(
                |e: tower_http::csrf::ProtectionError| {
                    tracing::warn!(reason = ?e.kind(), "cross-site request refused");
                    let mut r = axum::response::Response::new(axum::body::Body::from(
                        "Refused: a cross-site request may not change anything here.",
                    ));
                    *r.status_mut() = axum::http::StatusCode::FORBIDDEN;
                    r
                },
            ))
            .with_state(st))
    }

    /// Binds the listen address.
    pub async fn bind(self) -> Result<Bound, WebError> {
        let router = self.router()?;
        let addr = self.config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| WebError::Bind(addr, e))?;
        let local = listener.local_addr().map_err(|e| WebError::Bind(addr, e))?;
        Ok(Bound {
            listener,
            router,
            local,
        })
    }
}

/// A bound server, not yet serving.
pub struct Bound {
    listener: tokio::net::TcpListener,
    router: Router,
    local: SocketAddr,
}

impl Bound {
    /// The address bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        tracing::info!(addr = %self.local, "web page served");
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(WebError::Serve)
    }
}
