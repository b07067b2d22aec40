//! `vtex.impersonate-session`: an admin (e.g. a call centre) acting as a customer.
//!
//! The customer's email comes from `public.vtex-impersonated-customer-email` when that key is
//! set (even to `""`, which ends impersonation), else from the cookie of the same name. Only a
//! logged-in admin with the impersonation permission gets the customer's id and email.
//! `impersonate.account` is always the account name.

use std::sync::Arc;

use sessiond_core::{AppError, Call, Changes};

use super::{same_ci, text, App, Outputs};
use crate::commerce::CommerceData;

/// The key naming the customer to impersonate (in `public` and in `cookie`).
const EMAIL_KEY: &str = "vtex-impersonated-customer-email";

/// The impersonate app of one account.
pub(super) struct Impersonate {
    commerce: Arc<CommerceData>,
}

impl Impersonate {
    /// The app reading `commerce`'s admins and customers.
    pub(super) fn new(commerce: Arc<CommerceData>) -> Self {
        Impersonate { commerce }
    }
}

impl App for Impersonate {
    fn answer(&self, call: &Call<'_>) -> Result<Changes, AppError> {
        let email = match call.input.get("public").and_then(|ns| ns.get(EMAIL_KEY)) {
            Some(value) => value.as_str().unwrap_or(""),
            None => text(call, "cookie", EMAIL_KEY).unwrap_or(""),
        };
        let admin = text(call, "authentication", "adminUserEmail")
            .and_then(|e| self.commerce.admins.iter().find(|a| same_ci(&a.email, e)));
        let allowed = admin.is_some_and(|a| a.can_impersonate);
        let customer = if allowed && !email.is_empty() {
            self.commerce
                .customers
                .iter()
                .find(|c| same_ci(&c.email, email))
        } else {
            None
        };
        let mut out = Outputs::new("impersonate");
        out.put("storeUserId", customer.map(|c| c.id.as_str()));
        out.put("storeUserEmail", customer.map(|c| c.email.as_str()));
        out.put(
            "canImpersonate",
            Some(if allowed { "true" } else { "false" }),
        );
        out.put("account", Some(call.account));
        Ok(out.into_changes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    const APP: &str = "vtex.impersonate-session";
    const ADMIN: (&str, &str) = ("authentication.adminUserEmail", "Admin@Example.com");
    const VIEWER: (&str, &str) = ("authentication.adminUserEmail", "viewer@example.com");
    const PUBLIC: &str = "public.vtex-impersonated-customer-email";
    const COOKIE: &str = "cookie.vtex-impersonated-customer-email";

    fn no_customer(a: &Answer) -> bool {
        removed(a, "impersonate.storeUserId") && removed(a, "impersonate.storeUserEmail")
    }

    #[tokio::test]
    async fn a_permitted_admin_impersonates_an_existing_customer() {
        let a = run(APP, &[ADMIN, (PUBLIC, "CAROL@example.org")], &[])
            .await
            .unwrap();
        assert_eq!(written(&a, "impersonate.storeUserId"), Some(CAROL));
        assert_eq!(
            written(&a, "impersonate.storeUserEmail"),
            Some("carol@example.org")
        );
        assert_eq!(written(&a, "impersonate.canImpersonate"), Some("true"));
        assert_eq!(written(&a, "impersonate.account"), Some(ACCOUNT));
        // The cookie works as well.
        let a = run(APP, &[ADMIN, (COOKIE, "bob@example.com")], &[])
            .await
            .unwrap();
        assert_eq!(written(&a, "impersonate.storeUserId"), Some(BOB));
    }

    #[tokio::test]
    async fn an_admin_without_permission_impersonates_nobody() {
        let a = run(APP, &[VIEWER, (PUBLIC, "carol@example.org")], &[])
            .await
            .unwrap();
        assert!(no_customer(&a));
        assert_eq!(written(&a, "impersonate.canImpersonate"), Some("false"));
        assert_eq!(written(&a, "impersonate.account"), Some(ACCOUNT));
        // Not an admin at all, or not logged in.
        for set in [
            &[
                ("authentication.adminUserEmail", "alice@example.com"),
                (PUBLIC, "carol@example.org"),
            ][..],
            &[(PUBLIC, "carol@example.org")][..],
        ] {
            let a = run(APP, set, &[]).await.unwrap();
            assert!(no_customer(&a));
            assert_eq!(written(&a, "impersonate.canImpersonate"), Some("false"));
        }
    }

    #[tokio::test]
    async fn an_empty_public_email_ends_impersonation_even_with_the_cookie() {
        let set = [ADMIN, (PUBLIC, ""), (COOKIE, "carol@example.org")];
        let a = run(APP, &set, &[]).await.unwrap();
        assert!(no_customer(&a));
        assert_eq!(written(&a, "impersonate.canImpersonate"), Some("true"));
    }

    #[tokio::test]
    async fn an_unknown_customer_is_not_impersonated() {
        let a = run(APP, &[ADMIN, (PUBLIC, "who@example.com")], &[])
            .await
            .unwrap();
        assert!(no_customer(&a));
        assert_eq!(written(&a, "impersonate.canImpersonate"), Some("true"));
        let a = run(APP, &[ADMIN], &[]).await.unwrap();
        assert!(no_customer(&a));
    }
}
