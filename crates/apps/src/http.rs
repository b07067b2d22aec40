//! Remote session apps over HTTP.
