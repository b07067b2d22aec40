//! `vtex.store-session`: which sales channel (trade policy) the visitor browses, with its
//! currency, country, culture and privacy.
//!
//! The default channel is the one marked `default` (else the first). `public.sc` requests a
//! channel, granted when it exists and the visitor may use it. A refused request the visitor is
//! making now fails the whole request (401 anonymous, 403 logged in); a standing request that the
//! visitor can no longer honour (they logged out) falls back to the default channel.

use std::sync::Arc;

use sessiond_core::{AppError, Call, Changes, Key};

use super::{list_items, same_ci, text, App, Outputs};
use crate::commerce::{CommerceData, SalesChannel};

/// The store app of one account.
pub(super) struct Store {
    commerce: Arc<CommerceData>,
}

impl Store {
    /// The app reading `commerce`'s sales channels.
    pub(super) fn new(commerce: Arc<CommerceData>) -> Self {
        Store { commerce }
    }

    /// The account's default channel: the one marked `default`, else the first.
    fn default_channel(&self) -> Option<&SalesChannel> {
        let channels = &self.commerce.sales_channels;
        channels
            .iter()
            .find(|c| c.default)
            .or_else(|| channels.first())
    }
}

/// Whether the visitor of `call` may use `channel`: public channels are open to all; a restricted
/// one needs an authenticated visitor (price tables loaded from a bare `public.storeUserEmail`
/// prove nothing) whose email is in its allowed emails or one of whose price tables is in its
/// allowed price tables.
fn may_use(channel: &SalesChannel, call: &Call<'_>) -> bool {
    if !channel.restricted {
        return true;
    }
    if text(call, "profile", "isAuthenticated") != Some("true") {
        return false;
    }
    let by_email = text(call, "profile", "email")
        .is_some_and(|email| channel.allowed_emails.iter().any(|a| same_ci(a, email)));
    let by_table = text(call, "profile", "priceTables").is_some_and(|tables| {
        list_items(tables).any(|t| channel.allowed_price_tables.iter().any(|a| a == t))
    });
    by_email || by_table
}

/// The rejection of a request for channel `sc` (`exists`: whether the account has it).
fn refusal(sc: &str, exists: bool, call: &Call<'_>) -> AppError {
    let authenticated = text(call, "profile", "isAuthenticated") == Some("true");
    let (status, kind) = if authenticated {
        (403, "Forbidden")
    } else {
        (401, "Unauthorized")
    };
    let message = match (exists, authenticated) {
        (false, _) => format!("sales channel {sc:?} does not exist"),
        (true, false) => {
            format!("sales channel {sc:?} is restricted: log in as a customer allowed to use it")
        }
        (true, true) => {
            format!("sales channel {sc:?} is restricted and this customer may not use it")
        }
    };
    AppError::Rejected {
        status,
        kind: kind.to_owned(),
        message,
    }
}

impl App for Store {
    fn answer(&self, call: &Call<'_>) -> Result<Changes, AppError> {
        let channel = match text(call, "public", "sc") {
            None => self.default_channel(),
            Some(sc) => {
                let requested = self.commerce.sales_channels.iter().find(|c| c.id == sc);
                match requested {
                    Some(c) if may_use(c, call) => Some(c),
                    _ if call.changed.contains(&Key::new("public", "sc")) => {
                        return Err(refusal(sc, requested.is_some(), call));
                    }
                    _ => self.default_channel(),
                }
            }
        };
        let culture = text(call, "public", "cultureInfo")
            .or_else(|| text(call, "public", "locale"))
            .or(channel.map(|c| c.culture.as_str()));
        let mut out = Outputs::new("store");
        out.put("channel", channel.map(|c| c.id.as_str()));
        out.put("countryCode", channel.map(|c| c.country_code.as_str()));
        out.put("cultureInfo", culture);
        out.put("currencyCode", channel.map(|c| c.currency_code.as_str()));
        out.put(
            "currencySymbol",
            channel.map(|c| c.currency_symbol.as_str()),
        );
        out.put(
            "channelPrivacy",
            channel.map(|c| if c.restricted { "private" } else { "public" }),
        );
        Ok(out.into_changes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    const APP: &str = "vtex.store-session";

    fn rejected(result: Result<Answer, sessiond_core::AppError>) -> (u16, String, String) {
        match result {
            Err(sessiond_core::AppError::Rejected {
                status,
                kind,
                message,
            }) => (status, kind, message),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_bare_create_gets_the_default_channel() {
        let a = run(APP, &[], &[]).await.unwrap();
        assert_eq!(written(&a, "store.channel"), Some("1"));
        assert_eq!(written(&a, "store.countryCode"), Some("BRA"));
        assert_eq!(written(&a, "store.cultureInfo"), Some("pt-BR"));
        assert_eq!(written(&a, "store.currencyCode"), Some("BRL"));
        assert_eq!(written(&a, "store.currencySymbol"), Some("R$"));
        assert_eq!(written(&a, "store.channelPrivacy"), Some("public"));
        assert_eq!(a.len(), 6);
    }

    #[tokio::test]
    async fn without_a_default_flag_the_first_channel_is_the_default() {
        let mut data = (*demo()).clone();
        data.sales_channels
            .iter_mut()
            .for_each(|c| c.default = false);
        data.sales_channels.swap(0, 1);
        let app = super::super::transformer(APP, data.into(), &verifier()).unwrap();
        let a = call(app.as_ref(), APP, &[], &[]).await.unwrap();
        assert_eq!(written(&a, "store.channel"), Some("2"));
        // No channel at all: every output is cleared.
        let app = super::super::transformer(APP, Default::default(), &verifier()).unwrap();
        let a = call(app.as_ref(), APP, &[], &[]).await.unwrap();
        assert!(removed(&a, "store.channel") && removed(&a, "store.channelPrivacy"));
    }

    #[tokio::test]
    async fn a_public_channel_is_selected_by_sc() {
        let a = run(APP, &[("public.sc", "2")], &["public.sc"])
            .await
            .unwrap();
        assert_eq!(written(&a, "store.channel"), Some("2"));
        assert_eq!(written(&a, "store.currencyCode"), Some("USD"));
        assert_eq!(written(&a, "store.currencySymbol"), Some("US$"));
        assert_eq!(written(&a, "store.countryCode"), Some("USA"));
        assert_eq!(written(&a, "store.cultureInfo"), Some("en-US"));
        // An empty sc is no request.
        let a = run(APP, &[("public.sc", "")], &["public.sc"])
            .await
            .unwrap();
        assert_eq!(written(&a, "store.channel"), Some("1"));
    }

    #[tokio::test]
    async fn culture_info_overrides_locale_which_overrides_the_channel() {
        let both = [("public.cultureInfo", "es-AR"), ("public.locale", "en-GB")];
        let a = run(APP, &both, &[]).await.unwrap();
        assert_eq!(written(&a, "store.cultureInfo"), Some("es-AR"));
        let a = run(APP, &[("public.locale", "en-GB")], &[]).await.unwrap();
        assert_eq!(written(&a, "store.cultureInfo"), Some("en-GB"));
        let a = run(
            APP,
            &[("public.cultureInfo", ""), ("public.locale", "en-GB")],
            &[],
        )
        .await
        .unwrap();
        assert_eq!(written(&a, "store.cultureInfo"), Some("en-GB"));
    }

    #[tokio::test]
    async fn a_restricted_channel_is_granted_by_price_table_or_email() {
        let vip = [
            ("public.sc", "3"),
            ("profile.isAuthenticated", "true"),
            ("profile.email", "alice@example.com"),
            ("profile.priceTables", "gold,vip"),
        ];
        let a = run(APP, &vip, &["public.sc"]).await.unwrap();
        assert_eq!(written(&a, "store.channel"), Some("3"));
        assert_eq!(written(&a, "store.channelPrivacy"), Some("private"));
        let bob = [
            ("public.sc", "3"),
            ("profile.isAuthenticated", "true"),
            ("profile.email", "BOB@Example.com"),
        ];
        let a = run(APP, &bob, &["public.sc"]).await.unwrap();
        assert_eq!(written(&a, "store.channel"), Some("3"));
    }

    #[tokio::test]
    async fn an_anonymous_request_for_a_restricted_channel_is_401() {
        let (status, kind, message) =
            rejected(run(APP, &[("public.sc", "3")], &["public.sc"]).await);
        assert_eq!((status, kind.as_str()), (401, "Unauthorized"));
        assert!(message.contains("\"3\""), "{message}");
        let anonymous = [("public.sc", "3"), ("profile.isAuthenticated", "false")];
        let (status, _, _) = rejected(run(APP, &anonymous, &["public.sc"]).await);
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn a_logged_in_request_for_a_channel_not_allowed_is_403() {
        let carol = [
            ("public.sc", "3"),
            ("profile.isAuthenticated", "true"),
            ("profile.email", "carol@example.org"),
            ("profile.priceTables", "gold"),
        ];
        let (status, kind, _) = rejected(run(APP, &carol, &["public.sc"]).await);
        assert_eq!((status, kind.as_str()), (403, "Forbidden"));
    }

    #[tokio::test]
    async fn an_unknown_channel_is_refused_too() {
        let (status, _, message) = rejected(run(APP, &[("public.sc", "9")], &["public.sc"]).await);
        assert_eq!(status, 401);
        assert!(message.contains("does not exist"), "{message}");
        let logged_in = [("public.sc", "9"), ("profile.isAuthenticated", "true")];
        let (status, _, _) = rejected(run(APP, &logged_in, &["public.sc"]).await);
        assert_eq!(status, 403);
    }

    #[tokio::test]
    async fn a_standing_request_the_visitor_lost_falls_back_to_the_default() {
        // The visitor logged out: sc did not change in this cycle, the profile did.
        let logged_out = [("public.sc", "3"), ("profile.isAuthenticated", "false")];
        let a = run(
            APP,
            &logged_out,
            &["profile.isAuthenticated", "profile.email"],
        )
        .await
        .unwrap();
        assert_eq!(written(&a, "store.channel"), Some("1"));
        assert_eq!(written(&a, "store.channelPrivacy"), Some("public"));
        let a = run(APP, &[("public.sc", "9")], &[]).await.unwrap();
        assert_eq!(written(&a, "store.channel"), Some("1"));
    }
}
