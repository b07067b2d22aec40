//! Declarations of the built-in apps, exactly as the VTEX documentation tables give them.

use sessiond_core::AppSpec;

/// The names of the built-in apps, in their default installation order.
pub const NAMES: [&str; 6] = [
    "vtex.store-session",
    "vtex.authentication-session",
    "vtex.profile-session",
    "vtex.rnb-session",
    "vtex.checkout-session",
    "vtex.impersonate-session",
];

/// The declaration of the built-in app `name`, or `None` when no built-in has that name.
pub fn spec(name: &str) -> Option<AppSpec> {
    let body = match name {
        "vtex.store-session" => serde_json::json!({
            "runOnCreate": true,
            "input": {"public": ["cultureInfo", "sc", "locale"], "profile": ["email", "isAuthenticated", "priceTables"]},
            "output": {"store": ["channel", "countryCode", "cultureInfo", "currencyCode", "currencySymbol", "channelPrivacy"]}
        }),
        "vtex.authentication-session" => serde_json::json!({
            "input": {"cookie": ["VtexIdclientAutCookie", "VtexIdclientAutCookie_.*"]},
            "output": {"authentication": ["adminUserId", "adminUserEmail", "storeUserId", "storeUserEmail"]}
        }),
        "vtex.profile-session" => serde_json::json!({
            "input": {"public": ["storeUserEmail"], "authentication": ["storeUserId"], "impersonate": ["storeUserId"]},
            "output": {"profile": ["id", "email", "firstName", "lastName", "phone", "document", "priceTables", "isAuthenticated"]}
        }),
        "vtex.rnb-session" => serde_json::json!({
            "input": {"profile": ["email", "priceTables"], "public": ["utm_source", "utm_campaign", "postalCode"]},
            "output": {"rnb": ["campaigns"]}
        }),
        "vtex.checkout-session" => serde_json::json!({
            "input": {"public": ["regionId", "country", "postalCode", "geoCoordinates"]},
            "output": {"checkout": ["regionId", "cartId"]}
        }),
        "vtex.impersonate-session" => serde_json::json!({
            "input": {
                "public": ["vtex-impersonated-customer-email"],
                "cookie": ["vtex-impersonated-customer-email"],
                "authentication": ["adminUserEmail"]
            },
            "output": {"impersonate": ["storeUserId", "storeUserEmail", "canImpersonate", "account"]}
        }),
        _ => return None,
    };
    Some(AppSpec::from_declaration(name, &body).expect("built-in declarations are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::Key;

    #[test]
    fn every_builtin_has_a_declaration() {
        for name in NAMES {
            assert!(spec(name).is_some(), "{name}");
        }
        assert!(spec("vtex.nope").is_none());
        assert!(spec("vtex.store-session").unwrap().run_on_create);
        let auth = spec("vtex.authentication-session").unwrap();
        assert!(auth.watches(&Key::new("cookie", "VtexIdclientAutCookie_demo")));
    }
}
