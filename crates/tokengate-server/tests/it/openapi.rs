//! `GET /openapi.json`: the document is valid OpenAPI 3.x, describes the security
//! schemes, and lists exactly the routes the router serves — checked against the one list
//! `tokengate_server::routes::ROUTES`, whose every entry must also answer on a running
//! server with something other than the 404 fallback.

use crate::common;

use std::collections::BTreeSet;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokengate_server::routes::ROUTES;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The 404 body of a path no route matches.
fn is_fallback(resp: &Resp) -> bool {
    resp.status == StatusCode::NOT_FOUND
        && serde_json::from_str::<Value>(&resp.text).ok()
            == Some(json!({"error": "not_found", "error_description": "no such endpoint"}))
}

/// `path` with every `{param}` replaced by a random UUID.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').expect("closing brace") + start;
        out.push_str(&rest[..start]);
        out.push_str(&uuid::Uuid::new_v4().to_string());
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn listed() -> BTreeSet<(String, String)> {
    let set: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_ascii_uppercase(), (*p).to_owned()))
        .collect();
    assert_eq!(set.len(), ROUTES.len(), "ROUTES has duplicates");
    set
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("`paths` object");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("path item object");
        for method in METHODS {
            if item.contains_key(*method) {
                out.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every `$ref` anywhere under `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push(r.to_owned());
                    }
                }
                refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

async fn fetch_document(client: &Client) -> Value {
    let resp = client.get("/openapi.json", None).await;
    resp.expect(StatusCode::OK);
    let content_type = resp
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    resp.json()
}

#[tokio::test]
async fn openapi_document_is_valid_and_describes_security() {
    let server = Server::start();
    let doc = fetch_document(&server.client()).await;

    let version = doc["openapi"].as_str().expect("string `openapi`");
    assert!(version.starts_with("3."), "openapi version {version}");
    assert_eq!(doc["info"]["title"], "tokengate", "{}", doc["info"]);
    assert_eq!(
        doc["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{}",
        doc["info"]
    );
    let description = doc["info"]["description"].as_str().unwrap_or_default();
    assert!(
        description.contains("sign-out"),
        "description should be the README's first paragraph: {description:?}"
    );

    let schemes = &doc["components"]["securitySchemes"];
    let bearer = &schemes["bearer"];
    assert_eq!(bearer["type"], "http", "{schemes}");
    assert_eq!(bearer["scheme"], "bearer", "{schemes}");
    assert_eq!(bearer["bearerFormat"], "JWT", "{schemes}");
    let cookie = &schemes["session_cookie"];
    assert_eq!(cookie["type"], "apiKey", "{schemes}");
    assert_eq!(cookie["in"], "cookie", "{schemes}");
    assert_eq!(cookie["name"], "tokengate_session", "{schemes}");

    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    let error_body = &schemas["ErrorBody"];
    for field in ["error", "error_description"] {
        assert!(
            error_body["properties"][field].is_object(),
            "ErrorBody lacks {field}: {error_body}"
        );
    }

    // Every reference resolves.
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }
}

#[tokio::test]
async fn openapi_lists_exactly_the_routes_of_the_router() {
    let server = Server::start();
    let doc = fetch_document(&server.client()).await;

    let listed = listed();
    let documented = documented(&doc);
    let undocumented: Vec<_> = listed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes in ROUTES missing from the OpenAPI document: {undocumented:?}"
    );
    let unlisted: Vec<_> = documented.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "operations in the OpenAPI document missing from ROUTES: {unlisted:?}"
    );

    for (method, path) in &documented {
        let operation = &doc["paths"][path][method.to_ascii_lowercase()];
        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}: no responses"));
        // (A form post of the web pages succeeds with 303 See Other.)
        assert!(
            responses.keys().any(|s| s.starts_with('2') || s == "303"),
            "{method} {path}: no success response: {operation}"
        );
        // Every error response carries the JSON error body (the web pages' HTML ones excepted).
        for (status, response) in responses {
            let html = response["content"]["text/html"].is_object();
            let error = status.starts_with('4') || (status.starts_with('5') && path != "/readyz");
            // RFC 8935 §2.3 gives the SSF push endpoint's 400 its own body.
            let set_error = path == "/v1/gate/{issuer}/ssf" && status == "400";
            if error && !html {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    if set_error {
                        "#/components/schemas/SetErrorBody"
                    } else {
                        "#/components/schemas/ErrorBody"
                    },
                    "{method} {path} {status}: {response}"
                );
            }
        }
        // A route that needs a token says so, and documents the 401.
        let secured = operation["security"].as_array().is_some_and(|s| {
            s.iter()
                .any(|req| req.as_object().is_some_and(|r| r.contains_key("bearer")))
        });
        if secured {
            assert!(
                responses.contains_key("401"),
                "{method} {path}: secured but no 401: {operation}"
            );
        }
        // Path parameters are declared.
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let declared = operation["parameters"].as_array().is_some_and(|params| {
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
                });
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} undeclared"
                );
            }
        }
    }

    // The routes that need a token are documented as such.
    for (method, path) in [
        ("get", "/v1/auth/me"),
        ("post", "/v1/auth/signout"),
        ("get", "/v1/verify"),
        ("post", "/oauth2/introspect"),
        ("get", "/v1/events/revocations"),
        ("post", "/v1/admin/revocations"),
    ] {
        let security = &doc["paths"][path][method]["security"];
        assert!(
            security
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some())),
            "{method} {path}: security {security}"
        );
    }
    // Form bodies for the OAuth endpoints.
    for path in ["/oauth2/revoke", "/oauth2/introspect"] {
        let content = &doc["paths"][path]["post"]["requestBody"]["content"];
        assert!(
            content["application/x-www-form-urlencoded"].is_object(),
            "{path}: {content}"
        );
    }
}

#[tokio::test]
async fn every_listed_route_is_served() {
    let server = Server::start();
    let client = server.client();

    // The check below can tell the fallback apart.
    let missing = client.get("/v1/no-such-endpoint", None).await;
    assert!(is_fallback(&missing), "{missing:?}");

    for (method, path) in ROUTES {
        let method = Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let url_path = concrete(path);
        let resp = client.send(client.raw(method.clone(), &url_path)).await;
        assert!(
            !is_fallback(&resp),
            "{method} {path} ({url_path}) is listed but answers the 404 fallback"
        );
        assert_ne!(
            resp.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is listed but its method is not routed"
        );
    }
}
