//! `vtex.profile-session`: the customer record of the visitor.
//!
//! A logged-in (or impersonated) customer id loads the whole record and `isAuthenticated:
//! "true"`; the impersonated id wins over the logged-in one. An unauthenticated
//! `public.storeUserEmail` only loads that customer's price tables. Otherwise the profile is
//! cleared, with `isAuthenticated: "false"`.

use std::sync::Arc;

use sessiond_core::{AppError, Call, Changes};

use super::{joined_list, same_ci, text, App, Outputs};
use crate::commerce::{CommerceData, Customer};

/// The profile app of one account.
pub(super) struct Profile {
    commerce: Arc<CommerceData>,
}

impl Profile {
    /// The app reading `commerce`'s customers.
    pub(super) fn new(commerce: Arc<CommerceData>) -> Self {
        Profile { commerce }
    }
}

/// What the profile outputs hold (`None` = removed).
#[derive(Default)]
struct Fields<'c> {
    id: Option<&'c str>,
    email: Option<&'c str>,
    first_name: Option<&'c str>,
    last_name: Option<&'c str>,
    phone: Option<&'c str>,
    document: Option<&'c str>,
    price_tables: Option<String>,
    authenticated: bool,
}

/// The sorted, comma-joined price tables of `customer`.
fn price_tables(customer: &Customer) -> Option<String> {
    joined_list(customer.price_tables.iter().map(String::as_str))
}

impl App for Profile {
    fn answer(&self, call: &Call<'_>) -> Result<Changes, AppError> {
        let customers = &self.commerce.customers;
        let user_id = text(call, "impersonate", "storeUserId")
            .or_else(|| text(call, "authentication", "storeUserId"));
        let fields = if let Some(id) = user_id {
            match customers.iter().find(|c| c.id == id) {
                Some(c) => Fields {
                    id: Some(&c.id),
                    email: Some(&c.email),
                    first_name: Some(&c.first_name),
                    last_name: Some(&c.last_name),
                    phone: Some(&c.phone),
                    document: Some(&c.document),
                    price_tables: price_tables(c),
                    authenticated: true,
                },
                None => Fields {
                    id: Some(id),
                    authenticated: true,
                    ..Fields::default()
                },
            }
        } else if let Some(email) = text(call, "public", "storeUserEmail") {
            Fields {
                price_tables: customers
                    .iter()
                    .find(|c| same_ci(&c.email, email))
                    .and_then(price_tables),
                ..Fields::default()
            }
        } else {
            Fields::default()
        };
        let mut out = Outputs::new("profile");
        out.put("id", fields.id);
        out.put("email", fields.email);
        out.put("firstName", fields.first_name);
        out.put("lastName", fields.last_name);
        out.put("phone", fields.phone);
        out.put("document", fields.document);
        out.put("priceTables", fields.price_tables.as_deref());
        out.put(
            "isAuthenticated",
            Some(if fields.authenticated {
                "true"
            } else {
                "false"
            }),
        );
        Ok(out.into_changes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::transformer;
    use crate::commerce::CommerceData;

    const APP: &str = "vtex.profile-session";
    const OTHERS: [&str; 6] = [
        "profile.id",
        "profile.email",
        "profile.firstName",
        "profile.lastName",
        "profile.phone",
        "profile.document",
    ];

    #[tokio::test]
    async fn a_logged_in_customer_gets_the_full_record() {
        let a = run(APP, &[("authentication.storeUserId", ALICE)], &[])
            .await
            .unwrap();
        assert_eq!(written(&a, "profile.id"), Some(ALICE));
        assert_eq!(written(&a, "profile.email"), Some("alice@example.com"));
        assert_eq!(written(&a, "profile.firstName"), Some("Alice"));
        assert_eq!(written(&a, "profile.lastName"), Some("Silva"));
        assert_eq!(written(&a, "profile.phone"), Some("+5511999990001"));
        assert_eq!(written(&a, "profile.document"), Some("12345678901"));
        assert_eq!(written(&a, "profile.priceTables"), Some("gold,vip"));
        assert_eq!(written(&a, "profile.isAuthenticated"), Some("true"));
        // Bob has no price table: removed, not "".
        let a = run(APP, &[("authentication.storeUserId", BOB)], &[])
            .await
            .unwrap();
        assert!(removed(&a, "profile.priceTables"));
        assert_eq!(written(&a, "profile.firstName"), Some("Bob"));
    }

    #[tokio::test]
    async fn empty_fields_of_the_record_are_removed() {
        let mut data: CommerceData = (*demo()).clone();
        data.customers[0].phone.clear();
        let app = transformer(APP, data.into(), &verifier()).unwrap();
        let a = call(
            app.as_ref(),
            APP,
            &[("authentication.storeUserId", ALICE)],
            &[],
        )
        .await
        .unwrap();
        assert!(removed(&a, "profile.phone"));
        assert_eq!(written(&a, "profile.document"), Some("12345678901"));
    }

    #[tokio::test]
    async fn the_impersonated_customer_wins() {
        let both = [
            ("authentication.storeUserId", ALICE),
            ("impersonate.storeUserId", CAROL),
        ];
        let a = run(APP, &both, &[]).await.unwrap();
        assert_eq!(written(&a, "profile.id"), Some(CAROL));
        assert_eq!(written(&a, "profile.priceTables"), Some("gold"));
        assert_eq!(written(&a, "profile.isAuthenticated"), Some("true"));
    }

    #[tokio::test]
    async fn an_id_without_a_record_is_authenticated_with_no_details() {
        let a = run(APP, &[("authentication.storeUserId", "nobody")], &[])
            .await
            .unwrap();
        assert_eq!(written(&a, "profile.id"), Some("nobody"));
        assert!(OTHERS[1..].iter().all(|k| removed(&a, k)));
        assert!(removed(&a, "profile.priceTables"));
        assert_eq!(written(&a, "profile.isAuthenticated"), Some("true"));
    }

    #[tokio::test]
    async fn an_unauthenticated_email_only_loads_price_tables() {
        let a = run(APP, &[("public.storeUserEmail", "ALICE@example.com")], &[])
            .await
            .unwrap();
        assert_eq!(written(&a, "profile.priceTables"), Some("gold,vip"));
        assert!(OTHERS.iter().all(|k| removed(&a, k)));
        assert_eq!(written(&a, "profile.isAuthenticated"), Some("false"));
        let a = run(APP, &[("public.storeUserEmail", "who@example.com")], &[])
            .await
            .unwrap();
        assert!(OTHERS.iter().all(|k| removed(&a, k)));
        assert!(removed(&a, "profile.priceTables"));
        assert_eq!(written(&a, "profile.isAuthenticated"), Some("false"));
    }

    #[tokio::test]
    async fn nobody_clears_the_profile() {
        let a = run(APP, &[("authentication.storeUserId", "")], &[])
            .await
            .unwrap();
        assert_eq!(a.len(), 8);
        assert!(OTHERS.iter().all(|k| removed(&a, k)));
        assert!(removed(&a, "profile.priceTables"));
        assert_eq!(written(&a, "profile.isAuthenticated"), Some("false"));
    }
}
