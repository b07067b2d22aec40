//! The commerce data of an account, as its configuration provides it: sales channels,
//! customers, admins, delivery areas, campaigns (identity keys are in [`crate::identity`]).

use serde::Deserialize;

/// Everything the built-in apps read about one account.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommerceData {
    /// Sales channels (trade policies).
    #[serde(default)]
    pub sales_channels: Vec<SalesChannel>,
    /// Store customers.
    #[serde(default)]
    pub customers: Vec<Customer>,
    /// Admin users.
    #[serde(default)]
    pub admins: Vec<Admin>,
    /// Where sellers deliver.
    #[serde(default)]
    pub delivery_areas: Vec<DeliveryArea>,
    /// Campaign audiences.
    #[serde(default)]
    pub campaigns: Vec<Campaign>,
}

/// A sales channel (trade policy).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SalesChannel {
    /// Channel id, e.g. `"1"`.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// ISO currency code.
    pub currency_code: String,
    /// Currency symbol.
    pub currency_symbol: String,
    /// ISO 3166 alpha-3 country code.
    pub country_code: String,
    /// Culture, e.g. `pt-BR`.
    pub culture: String,
    /// Whether this is the account's default channel.
    #[serde(default)]
    pub default: bool,
    /// Whether the channel is private (only allowed visitors may select it).
    #[serde(default)]
    pub restricted: bool,
    /// Price tables whose holders may use a restricted channel.
    #[serde(default)]
    pub allowed_price_tables: Vec<String>,
    /// Emails that may use a restricted channel.
    #[serde(default)]
    pub allowed_emails: Vec<String>,
}

/// A store customer.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// Customer id.
    pub id: String,
    /// Email (log-in name).
    pub email: String,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: String,
    /// Phone number.
    #[serde(default)]
    pub phone: String,
    /// Document number.
    #[serde(default)]
    pub document: String,
    /// Price tables of the customer.
    #[serde(default)]
    pub price_tables: Vec<String>,
}

/// An admin user.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Admin id.
    pub id: String,
    /// Email (log-in name).
    pub email: String,
    /// Whether the admin may impersonate customers.
    #[serde(default)]
    pub can_impersonate: bool,
}

/// Where one seller delivers: postal-code ranges and/or a circle.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeliveryArea {
    /// Seller id.
    pub seller: String,
    /// ISO 3166 alpha-3 country code.
    pub country: String,
    /// Inclusive postal-code ranges.
    #[serde(default)]
    pub postal_ranges: Vec<[String; 2]>,
    /// Centre of the circle, `[longitude, latitude]`.
    #[serde(default)]
    pub center: Option<[f64; 2]>,
    /// Radius of the circle in kilometres.
    #[serde(default)]
    pub radius_km: Option<f64>,
}

/// A campaign audience: every listed condition must hold; a list matches any of its values.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// Campaign id (what `rnb.campaigns` lists).
    pub id: String,
    /// Allowed `utm_source` values.
    #[serde(default)]
    pub utm_source: Vec<String>,
    /// Allowed `utm_campaign` values.
    #[serde(default)]
    pub utm_campaign: Vec<String>,
    /// Inclusive postal-code ranges.
    #[serde(default)]
    pub postal_ranges: Vec<[String; 2]>,
    /// Allowed emails.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Allowed email domains.
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// Allowed price tables.
    #[serde(default)]
    pub price_tables: Vec<String>,
}
