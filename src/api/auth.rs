//! auth: logging in with a bot token (one `GET /users/@me` to learn who the
//! bot is) and logging out.
//!
//! Architecture invariant: the token a client sends is parsed into a
//! `Token` at once and never logged or echoed; a token Discord rejected is
//! remembered, so asking again does not add to the host's invalid count.

use std::sync::Arc;
use std::time::Instant;

use crate::api::error::ApiError;
use crate::api::handler::{Api, Context, json_response};
use crate::discord::bots::{Identity, Token};
use crate::discord::{self, Route};
use crate::http::server::{Request, Response};
use crate::store::SessionId;

/// The token of a login body `{"token": "..."}`, or a 400 saying what is
/// wrong with the body.
pub(super) fn login_token(body: &[u8]) -> Result<Token, ApiError> {
    let body: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request("body must be JSON like {\"token\": \"<bot token>\"}")
    })?;
    let raw = match body.get("token") {
        None => return Err(ApiError::bad_request("`token` is required")),
        Some(serde_json::Value::String(raw)) => raw,
        Some(_) => return Err(ApiError::bad_request("`token` must be a string")),
    };
    Token::parse(raw).map_err(ApiError::bad_request)
}

impl Api {
    pub(super) fn login(
        &self,
        request: &Request,
        context: &mut Context,
    ) -> Result<Response, ApiError> {
        let ip = self.client_ip(request);
        let now = Instant::now();
        if let Err(wait) = self.logins.check(ip, now) {
            return Err(ApiError::RateLimited {
                message: "too many failed logins from this address; retry after the given time"
                    .into(),
                retry_after: wait,
            });
        }
        let token = login_token(&request.body)?;
        if self.bots.was_rejected(&token) {
            // Asking Discord again would only add to the host's invalid count.
            self.logins.record_failure(ip, now);
            return Err(ApiError::TokenRejected);
        }
        if !self.bots.is_live(&token) && self.invalid.over_threshold(now) {
            return Err(ApiError::Unavailable(
                "this host is close to Discord's limit of 10,000 invalid requests per 10 minutes; \
                 logins with new tokens are paused, retry in a few minutes"
                    .into(),
            ));
        }
        let bot = self.bots.get_or_create(token);
        let deadline = context.started + self.max_wait;
        // Logins with one token at once share one check with Discord.
        let check = || {
            bot.current_user
                .run(deadline, || {
                    self.discord.get(&bot, Route::CurrentUser, deadline)
                })
                .unwrap_or(Err(discord::Error::Timeout))
        };
        let mut me = check();
        // A shared "rate limited" was measured against the first caller's
        // wait budget, which may end before ours: with time left, ask again
        // (a flight of our own, or the next one).
        if matches!(me, Err(discord::Error::RateLimited { .. })) && Instant::now() < deadline {
            me = check();
        }
        let me = me.map_err(ApiError::from).inspect_err(|e| {
            if *e == ApiError::TokenRejected {
                self.logins.record_failure(ip, now);
                self.end_bot(&bot);
            }
        })?;
        let identity: DiscordUser = serde_json::from_slice(&me).map_err(|_| {
            ApiError::BadGateway("Discord's /users/@me answer has no user id".into())
        })?;
        let identity = Identity {
            id: identity.id,
            username: identity.username,
        };
        bot.set_identity(identity.clone());
        let session = self.store.create(Arc::clone(&bot))?;
        context.session_prefix = Some(session.prefix().to_string());
        log::info!(
            "session {} created for bot {} ({})",
            session.prefix(),
            identity.id,
            identity.username
        );
        Ok(json_response(
            200,
            &serde_json::json!({
                "sessionId": session.as_str(),
                "message": "Logged in successfully",
                "bot": {"id": identity.id, "username": identity.username},
            }),
        ))
    }

    pub(super) fn logout(&self, session: &SessionId) -> Result<Response, ApiError> {
        let bot = self.store.remove(session)?.ok_or(ApiError::Unauthorized(
            "unknown or expired session; log in again",
        ))?;
        let identity = bot.identity();
        log::info!(
            "session {} logged out for bot {} ({})",
            session.prefix(),
            identity.id,
            identity.username
        );
        // Its last session: the bot is gone for good (API.md, "Gateway
        // behaviour"); an unanswered count keeps the connection, resumable.
        if self.store.sessions_of(&bot).is_ok_and(|n| n == 0)
            && let Some(id) = bot.discord_id()
        {
            self.events.bot_gone(id);
        }
        Ok(json_response(
            200,
            &serde_json::json!({"message": "Logged out successfully"}),
        ))
    }
}

#[derive(serde::Deserialize)]
pub(super) struct DiscordUser {
    pub(super) id: String,
    pub(super) username: String,
}
