//! `vtex.rnb-session`: the campaign audiences (rates and benefits) the visitor belongs to.
//!
//! A campaign lists conditions (a non-empty list each); the visitor belongs to it when every
//! listed condition holds, a list holding when any of its values matches. A campaign without any
//! listed condition matches nobody. The answer is the sorted, comma-joined campaign ids.

use std::sync::Arc;

use sessiond_core::{AppError, Call, Changes};

use super::{in_postal_ranges, joined_list, list_items, same_ci, text, App, Outputs};
use crate::commerce::{Campaign, CommerceData};

/// The rnb app of one account.
pub(super) struct Rnb {
    commerce: Arc<CommerceData>,
}

impl Rnb {
    /// The app reading `commerce`'s campaigns.
    pub(super) fn new(commerce: Arc<CommerceData>) -> Self {
        Rnb { commerce }
    }
}

/// What the campaign conditions look at.
struct Visitor<'c> {
    email: Option<&'c str>,
    price_tables: Vec<&'c str>,
    utm_source: Option<&'c str>,
    utm_campaign: Option<&'c str>,
    postal_code: Option<&'c str>,
}

/// Whether `visitor` belongs to `campaign`'s audience.
fn matches(campaign: &Campaign, visitor: &Visitor<'_>) -> bool {
    let domain = visitor
        .email
        .and_then(|e| e.rsplit_once('@'))
        .map(|(_, domain)| domain);
    let conditions = [
        (
            !campaign.utm_source.is_empty(),
            visitor
                .utm_source
                .is_some_and(|s| campaign.utm_source.iter().any(|v| v == s)),
        ),
        (
            !campaign.utm_campaign.is_empty(),
            visitor
                .utm_campaign
                .is_some_and(|s| campaign.utm_campaign.iter().any(|v| v == s)),
        ),
        (
            !campaign.postal_ranges.is_empty(),
            visitor
                .postal_code
                .is_some_and(|code| in_postal_ranges(code, &campaign.postal_ranges)),
        ),
        (
            !campaign.emails.is_empty(),
            visitor
                .email
                .is_some_and(|e| campaign.emails.iter().any(|v| same_ci(v, e))),
        ),
        (
            !campaign.email_domains.is_empty(),
            domain.is_some_and(|d| campaign.email_domains.iter().any(|v| same_ci(v, d))),
        ),
        (
            !campaign.price_tables.is_empty(),
            visitor
                .price_tables
                .iter()
                .any(|t| campaign.price_tables.iter().any(|v| v == t)),
        ),
    ];
    conditions.iter().any(|(listed, _)| *listed)
        && conditions.iter().all(|(listed, holds)| !listed || *holds)
}

impl App for Rnb {
    fn answer(&self, call: &Call<'_>) -> Result<Changes, AppError> {
        let visitor = Visitor {
            email: text(call, "profile", "email"),
            price_tables: text(call, "profile", "priceTables")
                .map(|t| list_items(t).collect())
                .unwrap_or_default(),
            utm_source: text(call, "public", "utm_source"),
            utm_campaign: text(call, "public", "utm_campaign"),
            postal_code: text(call, "public", "postalCode"),
        };
        let campaigns = joined_list(
            self.commerce
                .campaigns
                .iter()
                .filter(|c| matches(c, &visitor))
                .map(|c| c.id.as_str()),
        );
        let mut out = Outputs::new("rnb");
        out.put("campaigns", campaigns.as_deref());
        Ok(out.into_changes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::transformer;
    use crate::commerce::{Campaign, CommerceData};

    const APP: &str = "vtex.rnb-session";

    async fn campaigns(set: &[(&str, &str)]) -> Option<String> {
        let a = run(APP, set, &[]).await.unwrap();
        assert_eq!(a.len(), 1);
        written(&a, "rnb.campaigns").map(String::from)
    }

    /// The campaigns of an account with only `campaign`.
    async fn only(campaign: Campaign, set: &[(&str, &str)]) -> bool {
        let data = CommerceData {
            campaigns: vec![campaign],
            ..CommerceData::default()
        };
        let app = transformer(APP, data.into(), &verifier()).unwrap();
        let a = call(app.as_ref(), APP, set, &[]).await.unwrap();
        written(&a, "rnb.campaigns") == Some("c")
    }

    fn campaign() -> Campaign {
        Campaign {
            id: "c".into(),
            ..Campaign::default()
        }
    }

    #[tokio::test]
    async fn utm_fields_must_all_match_exactly() {
        let both = [
            ("public.utm_source", "google"),
            ("public.utm_campaign", "black friday"),
        ];
        assert_eq!(campaigns(&both).await.as_deref(), Some("bf-google"));
        assert_eq!(campaigns(&both[..1]).await, None);
        let wrong_case = [
            ("public.utm_source", "Google"),
            ("public.utm_campaign", "black friday"),
        ];
        assert_eq!(campaigns(&wrong_case).await, None);
    }

    #[tokio::test]
    async fn postal_ranges_match_digits_as_integers() {
        let sp = [("public.postalCode", "01310-100")];
        assert_eq!(campaigns(&sp).await.as_deref(), Some("sp-neighbours"));
        assert_eq!(campaigns(&[("public.postalCode", "22000000")]).await, None);
        assert_eq!(campaigns(&[("public.postalCode", "n/a")]).await, None);
    }

    #[tokio::test]
    async fn price_tables_match_any_table() {
        let set = [("profile.priceTables", "gold,vip")];
        assert_eq!(campaigns(&set).await.as_deref(), Some("vip-club"));
        assert_eq!(campaigns(&[("profile.priceTables", "gold")]).await, None);
    }

    #[tokio::test]
    async fn several_campaigns_are_sorted_and_none_is_removed() {
        let set = [
            ("public.utm_source", "google"),
            ("public.utm_campaign", "black friday"),
            ("public.postalCode", "01000000"),
            ("profile.priceTables", "vip"),
        ];
        assert_eq!(
            campaigns(&set).await.as_deref(),
            Some("bf-google,sp-neighbours,vip-club")
        );
        let a = run(APP, &[], &[]).await.unwrap();
        assert!(removed(&a, "rnb.campaigns"));
    }

    #[tokio::test]
    async fn emails_and_domains_match_case_insensitively() {
        let by_email = Campaign {
            emails: vec!["Alice@Example.com".into()],
            ..campaign()
        };
        assert!(only(by_email.clone(), &[("profile.email", "alice@example.COM")]).await);
        assert!(!only(by_email, &[("profile.email", "bob@example.com")]).await);
        let by_domain = Campaign {
            email_domains: vec!["EXAMPLE.org".into()],
            ..campaign()
        };
        assert!(only(by_domain.clone(), &[("profile.email", "carol@example.org")]).await);
        assert!(!only(by_domain.clone(), &[("profile.email", "alice@example.com")]).await);
        assert!(!only(by_domain.clone(), &[("profile.email", "example.org")]).await);
        assert!(!only(by_domain, &[]).await);
    }

    #[tokio::test]
    async fn every_listed_condition_must_hold_and_none_listed_never_matches() {
        let both = Campaign {
            utm_source: vec!["google".into(), "bing".into()],
            email_domains: vec!["example.com".into()],
            ..campaign()
        };
        let set = [
            ("public.utm_source", "bing"),
            ("profile.email", "a@example.com"),
        ];
        assert!(only(both.clone(), &set).await);
        assert!(!only(both.clone(), &set[..1]).await);
        assert!(!only(both, &set[1..]).await);
        let everything = [
            ("public.utm_source", "google"),
            ("profile.email", "a@example.com"),
            ("profile.priceTables", "vip"),
        ];
        assert!(!only(campaign(), &everything).await);
    }
}
