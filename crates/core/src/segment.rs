//! The segment: the shareable, cacheable part of a session (`vtex_segment`).
//!
//! Equal segment content must give byte-identical tokens, because storefronts and CDNs use the
//! token as a cache key. So the JSON has a fixed key order (the field order of [`Segment`]),
//! multi-valued fields are sorted, and the base64 has no padding.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::Serialize;

use crate::session::{Key, Session};

/// The segment of a session, in the fixed field order of the token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Segment {
    /// Campaign audiences (`rnb.campaigns`), sorted and comma-joined.
    pub campaigns: Option<String>,
    /// Sales channel (`store.channel`).
    pub channel: Option<String>,
    /// Price tables (`profile.priceTables`), sorted and comma-joined.
    #[serde(rename = "priceTables")]
    pub price_tables: Option<String>,
    /// Region (`checkout.regionId`).
    #[serde(rename = "regionId")]
    pub region_id: Option<String>,
    /// `public.utm_campaign`.
    pub utm_campaign: Option<String>,
    /// `public.utm_source`.
    pub utm_source: Option<String>,
    /// `public.utmi_campaign`.
    pub utmi_campaign: Option<String>,
    /// `store.currencyCode`.
    #[serde(rename = "currencyCode")]
    pub currency_code: Option<String>,
    /// `store.currencySymbol`.
    #[serde(rename = "currencySymbol")]
    pub currency_symbol: Option<String>,
    /// `store.countryCode`.
    #[serde(rename = "countryCode")]
    pub country_code: Option<String>,
    /// `store.cultureInfo`.
    #[serde(rename = "cultureInfo")]
    pub culture_info: Option<String>,
    /// `store.channelPrivacy` (`public` or `private`).
    #[serde(rename = "channelPrivacy")]
    pub channel_privacy: Option<String>,
    /// `search.facets`, present in the token only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facets: Option<String>,
}

/// Why a segment token could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    /// The token is not base64.
    #[error("the segment token is not base64")]
    NotBase64,
    /// The decoded bytes are not a JSON object.
    #[error("the segment token does not hold a JSON object")]
    NotJsonObject,
}

/// The session keys a segment is derived from.
const INPUTS: [(&str, &str); 13] = [
    ("rnb", "campaigns"),
    ("store", "channel"),
    ("profile", "priceTables"),
    ("checkout", "regionId"),
    ("public", "utm_campaign"),
    ("public", "utm_source"),
    ("public", "utmi_campaign"),
    ("store", "currencyCode"),
    ("store", "currencySymbol"),
    ("store", "countryCode"),
    ("store", "cultureInfo"),
    ("store", "channelPrivacy"),
    ("search", "facets"),
];

impl Segment {
    /// Whether the segment is derived from `key`: a change of any other key leaves it as is.
    pub fn reads(key: &Key) -> bool {
        INPUTS
            .iter()
            .any(|(ns, name)| key.namespace == *ns && key.name == *name)
    }

    /// Derives the segment of `session`.
    pub fn of(session: &Session) -> Self {
        let text = |ns: &str, key: &str| session.get(ns, key).and_then(|v| as_text(&v.value));
        let list =
            |ns: &str, key: &str| session.get(ns, key).and_then(|v| normalize_list(&v.value));
        Segment {
            campaigns: list("rnb", "campaigns"),
            channel: text("store", "channel"),
            price_tables: list("profile", "priceTables"),
            region_id: text("checkout", "regionId"),
            utm_campaign: text("public", "utm_campaign"),
            utm_source: text("public", "utm_source"),
            utmi_campaign: text("public", "utmi_campaign"),
            currency_code: text("store", "currencyCode"),
            currency_symbol: text("store", "currencySymbol"),
            country_code: text("store", "countryCode"),
            culture_info: text("store", "cultureInfo"),
            channel_privacy: text("store", "channelPrivacy"),
            facets: text("search", "facets"),
        }
    }

    /// Overrides a field for one answer (`GET /api/segments?utm_source=…`). Returns whether
    /// `name` is an overridable field.
    pub fn override_field(&mut self, name: &str, value: &str) -> bool {
        let slot = match name {
            "utm_campaign" => &mut self.utm_campaign,
            "utm_source" => &mut self.utm_source,
            "utmi_campaign" => &mut self.utmi_campaign,
            "cultureInfo" => &mut self.culture_info,
            _ => return false,
        };
        *slot = Some(value.to_owned());
        true
    }

    /// The compact JSON of the segment, in the fixed field order.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a segment always serializes")
    }

    /// The `vtex_segment` token: unpadded standard base64 of [`Segment::to_json`].
    pub fn encode(&self) -> String {
        STANDARD_NO_PAD.encode(self.to_json())
    }
}

/// Encodes any segment object (e.g. a decoded token) the way [`Segment::encode`] does.
pub fn encode_map(segment: &serde_json::Map<String, serde_json::Value>) -> String {
    STANDARD_NO_PAD.encode(serde_json::to_vec(segment).expect("JSON values serialize"))
}

/// Decodes a segment token: standard or URL-safe alphabet, padded or not.
pub fn decode(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, SegmentError> {
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let token = token.trim();
    let bytes = if token.contains(['-', '_']) {
        GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT).decode(token)
    } else {
        GeneralPurpose::new(&alphabet::STANDARD, LENIENT).decode(token)
    }
    .map_err(|_| SegmentError::NotBase64)?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(SegmentError::NotJsonObject),
    }
}

/// A session value as segment text: strings as they are, numbers and booleans printed,
/// `null` and `""` as no value, anything else as compact JSON.
fn as_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.is_empty() => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// Normalizes a multi-valued value (a comma-joined string or a JSON array, whose items may be
/// comma-joined too) into its sorted, de-duplicated, comma-joined form of trimmed items; an
/// empty list is no value. So `["b,a"]`, `[" a", "b"]` and `"a,b"` are all `"a,b"`.
pub fn normalize_list(value: &serde_json::Value) -> Option<String> {
    let texts: Vec<String> = match value {
        serde_json::Value::Array(items) => items.iter().filter_map(as_text).collect(),
        other => as_text(other).into_iter().collect(),
    };
    let mut parts: Vec<String> = texts
        .iter()
        .flat_map(|t| t.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    parts.retain(|p| !p.is_empty());
    parts.sort();
    parts.dedup();
    (!parts.is_empty()).then(|| parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_normalize_alike_in_either_form() {
        let forms = [
            serde_json::json!("a,b"),
            serde_json::json!(" b , a ,a"),
            serde_json::json!(["b,a"]),
            serde_json::json!([" a", "b ", "a"]),
            serde_json::json!(["b", "a,"]),
        ];
        for form in &forms {
            assert_eq!(normalize_list(form).as_deref(), Some("a,b"), "{form}");
        }
        for empty in [
            serde_json::json!([]),
            serde_json::json!(""),
            serde_json::json!([" , "]),
        ] {
            assert_eq!(normalize_list(&empty), None, "{empty}");
        }
    }

    #[test]
    fn the_segment_reads_exactly_its_inputs() {
        use crate::session::Value;
        let mut a = Session::new("demo", 0, 1_000);
        a.set(&Key::new("store", "channel"), Value::new("1"));
        for (ns, name) in [("public", "other"), ("store", "x"), ("profile", "email")] {
            let key = Key::new(ns, name);
            assert!(!Segment::reads(&key), "{ns}.{name}");
            let mut b = a.clone();
            b.set(&key, Value::new("x"));
            assert_eq!(Segment::of(&a).encode(), Segment::of(&b).encode());
        }
        for (ns, name) in INPUTS {
            let key = Key::new(ns, name);
            assert!(Segment::reads(&key), "{ns}.{name}");
            let mut c = a.clone();
            c.set(&key, Value::new("changed"));
            assert_ne!(Segment::of(&a), Segment::of(&c), "{ns}.{name}");
        }
    }
    use crate::session::{Key, Value};

    #[test]
    fn matches_the_reference_token() {
        // The segment token of VTEX's own OpenAPI example, byte for byte.
        let expected = "eyJjYW1wYWlnbnMiOm51bGwsImNoYW5uZWwiOiIxIiwicHJpY2VUYWJsZXMiOm51bGwsInJlZ2lvbklkIjpudWxsLCJ1dG1fY2FtcGFpZ24iOm51bGwsInV0bV9zb3VyY2UiOm51bGwsInV0bWlfY2FtcGFpZ24iOm51bGwsImN1cnJlbmN5Q29kZSI6IkJSTCIsImN1cnJlbmN5U3ltYm9sIjoiUiQiLCJjb3VudHJ5Q29kZSI6IkJSQSIsImN1bHR1cmVJbmZvIjoiZW4tVVMiLCJjaGFubmVsUHJpdmFjeSI6InB1YmxpYyJ9";
        let mut s = Session::new("demo", 0, 1);
        for (k, v) in [
            ("channel", "1"),
            ("currencyCode", "BRL"),
            ("currencySymbol", "R$"),
            ("countryCode", "BRA"),
            ("cultureInfo", "en-US"),
            ("channelPrivacy", "public"),
        ] {
            s.set(&Key::new("store", k), Value::new(v));
        }
        assert_eq!(Segment::of(&s).encode(), expected);
        let decoded = decode(expected).unwrap();
        assert_eq!(decoded["channel"], "1");
        assert_eq!(decoded.keys().next().map(String::as_str), Some("campaigns"));
    }

    #[test]
    fn lists_are_sorted_so_equal_audiences_give_equal_tokens() {
        let mut a = Session::new("demo", 0, 1);
        a.set(&Key::new("rnb", "campaigns"), Value::new("b,a"));
        let mut b = Session::new("demo", 0, 1);
        b.set(
            &Key::new("rnb", "campaigns"),
            Value::new(serde_json::json!(["a", "b", "a"])),
        );
        assert_eq!(Segment::of(&a).encode(), Segment::of(&b).encode());
        assert_eq!(Segment::of(&a).campaigns.as_deref(), Some("a,b"));
        let mut c = Session::new("demo", 0, 1);
        c.set(
            &Key::new("rnb", "campaigns"),
            Value::new(serde_json::json!([])),
        );
        assert_eq!(Segment::of(&c).campaigns, None);
    }

    #[test]
    fn facets_only_when_set() {
        let mut s = Session::new("demo", 0, 1);
        assert!(!String::from_utf8(Segment::of(&s).to_json())
            .unwrap()
            .contains("facets"));
        s.set(&Key::new("search", "facets"), Value::new("k=v;"));
        assert!(String::from_utf8(Segment::of(&s).to_json())
            .unwrap()
            .ends_with(r#""facets":"k=v;"}"#));
    }

    #[test]
    fn decodes_every_alphabet_and_padding() {
        let json = br#"{"channel":"1?>"}"#;
        let std = base64::engine::general_purpose::STANDARD.encode(json);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        assert_eq!(decode(&std).unwrap()["channel"], "1?>");
        assert_eq!(decode(&url).unwrap()["channel"], "1?>");
        assert_eq!(decode("%%%"), Err(SegmentError::NotBase64));
        assert_eq!(
            decode(&STANDARD_NO_PAD.encode("[1]")),
            Err(SegmentError::NotJsonObject)
        );
    }
}
