//! `vtex.checkout-session`: the region (which sellers deliver to the visitor) and the cart id.
//!
//! `public.regionId` is used as given. Otherwise a location is `public.country` plus a postal
//! code and/or `"long,lat"` coordinates: the sellers whose delivery area (same country) has a
//! postal range holding the code, or a circle holding the point, in configuration order, give
//! `regionId = base64("SW#" + ids joined by ";")`. The cart id is derived from the session id once
//! and then kept (the app reads its own `checkout.cartId` to know), so a new session derived
//! again before it is first saved has the same cart.

use std::sync::Arc;

use base64::Engine;
use sessiond_core::{AppError, Call, Changes, SessionId};
use sha2::{Digest, Sha256};

use super::{in_postal_ranges, same_ci, text, App, Outputs};
use crate::commerce::{CommerceData, DeliveryArea};

/// Mean Earth radius in kilometres (haversine distances).
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// The checkout app of one account.
pub(super) struct Checkout {
    commerce: Arc<CommerceData>,
}

impl Checkout {
    /// The app reading `commerce`'s delivery areas.
    pub(super) fn new(commerce: Arc<CommerceData>) -> Self {
        Checkout { commerce }
    }

    /// The region of the sellers delivering to `country` at `postal_code` and/or `point`, or
    /// `None` when none does.
    fn region(
        &self,
        country: &str,
        postal_code: Option<&str>,
        point: Option<[f64; 2]>,
    ) -> Option<String> {
        let mut sellers: Vec<&str> = Vec::new();
        for area in &self.commerce.delivery_areas {
            if !same_ci(&area.country, country) || sellers.contains(&area.seller.as_str()) {
                continue;
            }
            let by_postal =
                postal_code.is_some_and(|code| in_postal_ranges(code, &area.postal_ranges));
            let by_circle = point.is_some_and(|p| in_circle(area, p));
            if (by_postal || by_circle) && !area.seller.is_empty() {
                sellers.push(&area.seller);
            }
        }
        (!sellers.is_empty()).then(|| {
            base64::engine::general_purpose::STANDARD.encode(format!("SW#{}", sellers.join(";")))
        })
    }
}

/// `"long,lat"` as a point, when both are numbers within their ranges.
fn parse_point(text: &str) -> Option<[f64; 2]> {
    let (long, lat) = text.split_once(',')?;
    let long: f64 = long.trim().parse().ok()?;
    let lat: f64 = lat.trim().parse().ok()?;
    ((-180.0..=180.0).contains(&long) && (-90.0..=90.0).contains(&lat)).then_some([long, lat])
}

/// Great-circle distance in kilometres between two `[long, lat]` points (haversine).
fn distance_km(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (lat1, lat2) = (a[1].to_radians(), b[1].to_radians());
    let d_lat = lat2 - lat1;
    let d_long = (b[0] - a[0]).to_radians();
    let h = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_long / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Whether `point` lies in `area`'s circle (an area without a complete circle holds nothing).
fn in_circle(area: &DeliveryArea, point: [f64; 2]) -> bool {
    match (area.center, area.radius_km) {
        (Some(center), Some(radius)) => {
            center.iter().all(|c| c.is_finite())
                && radius.is_finite()
                && distance_km(center, point) <= radius
        }
        _ => false,
    }
}

/// The cart of a new session: 32 hex digits derived from the session's id, so a session
/// derived again (it is, until it is first saved) gets the same cart. As unguessable as the
/// id it comes from, which only the session's token carries.
fn cart_id(session: SessionId) -> String {
    let digest = Sha256::new()
        .chain_update(b"vtex.checkout-session cartId ")
        .chain_update(session.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::from_bytes(bytes).simple().to_string()
}

impl App for Checkout {
    fn answer(&self, call: &Call<'_>) -> Result<Changes, AppError> {
        let region = match text(call, "public", "regionId") {
            Some(given) => Some(given.to_owned()),
            None => {
                let postal_code = text(call, "public", "postalCode");
                let point = text(call, "public", "geoCoordinates").and_then(parse_point);
                match text(call, "public", "country") {
                    Some(country) if postal_code.is_some() || point.is_some() => {
                        self.region(country, postal_code, point)
                    }
                    _ => None,
                }
            }
        };
        let mut out = Outputs::new("checkout");
        out.put("regionId", region.as_deref());
        if text(call, "checkout", "cartId").is_none() {
            out.put("cartId", Some(&cart_id(call.session)));
        }
        Ok(out.into_changes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const APP: &str = "vtex.checkout-session";

    fn region_of(sellers: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("SW#{sellers}"))
    }

    async fn region(set: &[(&str, &str)]) -> Option<String> {
        let a = run(APP, set, &[]).await.unwrap();
        assert!(a.contains_key("checkout.regionId"));
        written(&a, "checkout.regionId").map(String::from)
    }

    #[tokio::test]
    async fn a_given_region_is_used_as_is() {
        let set = [
            ("public.regionId", "v2.ABC=="),
            ("public.country", "BRA"),
            ("public.postalCode", "01310100"),
        ];
        assert_eq!(region(&set).await.as_deref(), Some("v2.ABC=="));
    }

    #[tokio::test]
    async fn postal_codes_select_sellers_in_configuration_order() {
        let sp = [
            ("public.country", "BRA"),
            ("public.postalCode", "01310-100"),
        ];
        assert_eq!(region(&sp).await, Some(region_of("lojasp;lojabr")));
        let rj = [
            ("public.country", "bra"),
            ("public.postalCode", "22041-001"),
        ];
        assert_eq!(region(&rj).await, Some(region_of("lojarj;lojabr")));
        assert_eq!(region_of("lojasp;lojabr"), "U1cjbG9qYXNwO2xvamFicg==");
    }

    #[tokio::test]
    async fn coordinates_select_sellers_within_their_radius() {
        // Copacabana, about 9 km from the centre of the Rio de Janeiro circle.
        let rio = [
            ("public.country", "BRA"),
            ("public.geoCoordinates", "-43.1822, -22.9711"),
        ];
        assert_eq!(region(&rio).await, Some(region_of("lojarj")));
        // São Paulo is about 360 km away.
        let sp = [
            ("public.country", "BRA"),
            ("public.geoCoordinates", "-46.6333,-23.5505"),
        ];
        assert_eq!(region(&sp).await, None);
        assert!((distance_km([-46.6333, -23.5505], [-43.2096, -22.9035]) - 357.0).abs() < 10.0);
    }

    #[tokio::test]
    async fn postal_and_coordinate_sellers_are_united() {
        let both = [
            ("public.country", "BRA"),
            ("public.postalCode", "01310100"),
            ("public.geoCoordinates", "-43.2096,-22.9035"),
        ];
        assert_eq!(region(&both).await, Some(region_of("lojasp;lojarj;lojabr")));
    }

    #[tokio::test]
    async fn no_valid_location_removes_the_region() {
        let cases: [&[(&str, &str)]; 6] = [
            &[],
            &[("public.postalCode", "01310100")],
            &[("public.country", "BRA")],
            &[
                ("public.country", "BRA"),
                ("public.geoCoordinates", "north"),
            ],
            &[
                ("public.country", "BRA"),
                ("public.geoCoordinates", "-43.2,-122.9"),
            ],
            &[("public.country", "USA"), ("public.postalCode", "01310100")],
        ];
        for set in cases {
            assert_eq!(region(set).await, None, "{set:?}");
        }
        let no_digits = [("public.country", "BRA"), ("public.postalCode", "SW1A")];
        assert_eq!(region(&no_digits).await, None);
    }

    #[test]
    fn a_cart_id_is_derived_from_its_session_id() {
        let a = SessionId::random();
        assert_eq!(cart_id(a), cart_id(a));
        assert_ne!(cart_id(a), cart_id(SessionId::random()));
        assert_ne!(cart_id(a), a.to_string().replace('-', ""));
    }

    #[tokio::test]
    async fn the_cart_id_is_set_once_then_kept() {
        let a = run(APP, &[("public.country", "BRA")], &[]).await.unwrap();
        let cart = written(&a, "checkout.cartId").unwrap();
        assert_eq!(cart.len(), 32);
        assert!(
            cart.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "{cart}"
        );
        let kept = [("public.country", "BRA"), ("checkout.cartId", cart)];
        let a = run(APP, &kept, &[]).await.unwrap();
        assert!(!a.contains_key("checkout.cartId"));
    }

    #[test]
    fn points_are_validated() {
        assert_eq!(parse_point("-43.2,-22.9"), Some([-43.2, -22.9]));
        assert_eq!(parse_point("-43.2"), None);
        assert_eq!(parse_point("NaN,1"), None);
        assert_eq!(parse_point("181,0"), None);
        assert_eq!(parse_point("inf,0"), None);
    }
}
