//! `/v1/admin/*`: cut a user off, and bulk-import another system's denylist.

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use tokengate_axum::Admin;
use tokengate_core::{Revocation, Timestamp};
use uuid::Uuid;

use tokengate_sessions::{AdminError, ImportError, IssuedBeforeError};

use crate::error::{ApiError, ApiResult, Json};
use crate::schema::{AdminRefusals, ErrorBody};
use crate::state::AppState;

/// Most entries one bulk import takes.
pub const MAX_IMPORT: usize = 100_000;

/// A user id from the path; a malformed one is as unknown as a missing user.
fn user_id(raw_id: &str) -> Result<Uuid, AdminError> {
    raw_id.parse().map_err(|_| AdminError::NotFound)
}

/// `POST /v1/admin/users/{id}/revoke`: end every session of the user.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/revoke",
    tag = "admin",
    security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = String, Path, description = "The user id (UUID)")),
    responses(
        (status = 204, description = "Every session of the user is revoked"),
        AdminRefusals,
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 503, description = "The store is unavailable (nothing was revoked) or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn revoke_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .sessions
        .revoke_user(admin.user_id(), user_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/users/{id}/disable`: block sign-in and refresh, then end every session.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/disable",
    tag = "admin",
    security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = String, Path, description = "The user id (UUID)")),
    responses(
        (status = 204, description = "The user is disabled (sign-in then answers 403) and every session revoked"),
        AdminRefusals,
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "An admin cannot disable their own account", body = ErrorBody),
        (status = 503, description = "The store is unavailable (nothing was changed) or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn disable_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .sessions
        .disable_user(admin.user_id(), user_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How far the streaming parse of an import got, for naming what failed.
#[derive(Debug, Default)]
struct Progress {
    /// The body is an array: later data errors are about an entry.
    in_array: bool,
    /// The position of the entry being read.
    position: usize,
    /// There were more than [`MAX_IMPORT`] entries.
    too_many: bool,
}

/// The whole import: a JSON array read entry by entry, so a body is never held as a tree.
struct ImportSeed<'a>(&'a mut Progress);

impl<'de> DeserializeSeed<'de> for ImportSeed<'_> {
    type Value = Vec<Revocation>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ImportSeed<'_> {
    type Value = Vec<Revocation>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of {\"jti\", \"exp\"}")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        self.0.in_array = true;
        let mut revocations = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_IMPORT));
        loop {
            self.0.position = revocations.len();
            if revocations.len() == MAX_IMPORT {
                // One more entry of any shape is one too many; skipping it allocates nothing.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    self.0.too_many = true;
                    return Err(de::Error::custom("too many entries"));
                }
                return Ok(revocations);
            }
            match seq.next_element::<ImportEntry>()? {
                Some(ImportEntry(revocation)) => revocations.push(revocation),
                None => return Ok(revocations),
            }
        }
    }
}

/// The fields of an entry; others are skipped.
#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum EntryField {
    Jti,
    Exp,
    #[serde(other)]
    Other,
}

/// One bulk-import entry `{"jti": UUID, "exp": UNIX_SECONDS}`.
struct ImportEntry(Revocation);

impl<'de> serde::Deserialize<'de> for ImportEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

/// An entry's `jti`: a UUID string. A wrong type is a data error naming what was expected;
/// malformed JSON stays a syntax error.
struct Jti(Uuid);

impl<'de> serde::Deserialize<'de> for Jti {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JtiVisitor;
        impl Visitor<'_> for JtiVisitor {
            type Value = Jti;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`jti` as a UUID string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Jti, E> {
                text.parse().map(Jti).map_err(|_| E::custom(BAD_JTI))
            }
        }
        deserializer.deserialize_str(JtiVisitor)
    }
}

/// An entry's `exp`: a positive integer of Unix seconds.
struct Exp(i64);

impl<'de> serde::Deserialize<'de> for Exp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExpVisitor;
        impl Visitor<'_> for ExpVisitor {
            type Value = Exp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(BAD_EXP)
            }
            fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Exp, E> {
                if secs > 0 {
                    Ok(Exp(secs))
                } else {
                    Err(E::custom(BAD_EXP))
                }
            }
            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Exp, E> {
                i64::try_from(secs)
                    .map_err(|_| E::custom(BAD_EXP))
                    .and_then(|secs| self.visit_i64(secs))
            }
        }
        deserializer.deserialize_i64(ExpVisitor)
    }
}

const BAD_JTI: &str = "`jti` is not a UUID";
const BAD_EXP: &str = "`exp` must be a positive integer (Unix seconds)";

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = ImportEntry;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object {\"jti\", \"exp\"}")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let (mut jti, mut exp) = (None, None);
        while let Some(field) = map.next_key::<EntryField>()? {
            match field {
                EntryField::Jti => jti = Some(map.next_value::<Jti>()?.0),
                EntryField::Exp => exp = Some(map.next_value::<Exp>()?.0),
                EntryField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let jti = jti.ok_or_else(|| de::Error::custom("missing string field `jti`"))?;
        let exp = exp.ok_or_else(|| de::Error::custom(BAD_EXP))?;
        Ok(ImportEntry(Revocation::Token {
            jti,
            exp: Timestamp::from_secs(exp),
        }))
    }
}

/// Parse a whole import body, entry by entry: the first bad entry, or entry
/// [`MAX_IMPORT`] + 1, stops the parse, and no JSON tree of the body is ever built (a
/// 16 MiB body of `[0,0,...]` is refused at entry 0). Malformed JSON is 400, a body that
/// is not an array 422, a bad entry 400 naming its position.
pub fn parse_import(body: &[u8]) -> ApiResult<Vec<Revocation>> {
    let mut progress = Progress::default();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = ImportSeed(&mut progress)
        .deserialize(&mut deserializer)
        .and_then(|revocations| deserializer.end().map(|()| revocations));
    parsed.map_err(|error| {
        if progress.too_many {
            ApiError::BadRequest(format!(
                "at most {MAX_IMPORT} entries per import; got more; nothing was imported"
            ))
        } else if error.classify() != Category::Data {
            ApiError::BadRequest(format!("malformed JSON: {error}"))
        } else if progress.in_array {
            ApiError::BadRequest(format!(
                "entry {}: {error}; nothing was imported",
                progress.position
            ))
        } else {
            ApiError::Unprocessable(format!("invalid request body: {error}"))
        }
    })
}

/// The raw body of an import, read as `axum::Json` reads one (415 for another content
/// type, checked first; 413 over the route's limit) but left unparsed for [`parse_import`].
pub struct ImportBody(Bytes);

/// Whether the request says its body is JSON: `application/json` or `application/*+json`,
/// with any parameters (the rule of `axum::Json`).
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for ImportBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            ));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::BadRequest(rejection.body_text())
                }
            })?;
        Ok(ImportBody(body))
    }
}

/// The answer to a refused import.
fn import_error(error: ImportError) -> ApiError {
    match error {
        ImportError::TooLate { .. } => ApiError::BadRequest(error.to_string()),
        ImportError::Unavailable(error) => error.into(),
    }
}

/// `POST /v1/admin/revocations`: `[{"jti","exp"}]`, all or nothing.
#[utoipa::path(
    post,
    path = "/v1/admin/revocations",
    tag = "admin",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body(content = Vec<crate::schema::RevocationEntry>, description = "Up to 100 000 revoked token ids with their expiry; the body may be up to 16 MiB"),
    responses(
        (status = 204, description = "Every entry is recorded and applied"),
        (status = 400, description = "Malformed JSON, too many entries, or a bad entry (named by its position); nothing was imported", body = ErrorBody),
        AdminRefusals,
        (status = 413, description = "The body is over 16 MiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "The body is not a JSON array", body = ErrorBody),
        (status = 503, description = "The store is unavailable (nothing was imported) or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn import(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ImportBody(body): ImportBody,
) -> ApiResult<StatusCode> {
    let revocations = parse_import(&body)?;
    // The request's buffer can go before the store is written.
    drop(body);
    state
        .sessions
        .import(admin.user_id(), &revocations)
        .await
        .map_err(import_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{"issued_before": UNIX_SECONDS}`
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct IssuedBeforeRequest {
    /// Every access token issued before this instant (Unix seconds, not in the future) is revoked.
    issued_before: i64,
}

/// `POST /v1/admin/revocations/issued-before`: revoke every access token of every user
/// issued before an instant (after a signing key was compromised).
#[utoipa::path(
    post,
    path = "/v1/admin/revocations/issued-before",
    tag = "admin",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body(content = IssuedBeforeRequest, description = "The cutoff: tokens with `iat` before it are refused"),
    responses(
        (status = 204, description = "Every access token issued before the cutoff is refused, on every node"),
        (status = 400, description = "Malformed JSON, or a cutoff in the future", body = ErrorBody),
        AdminRefusals,
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "No integer `issued_before`", body = ErrorBody),
        (status = 503, description = "The store is unavailable (nothing was revoked) or the revocation index is stale", body = ErrorBody),
    )
)]
pub async fn revoke_issued_before(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(request): Json<IssuedBeforeRequest>,
) -> ApiResult<StatusCode> {
    state
        .sessions
        .revoke_issued_before(admin.user_id(), Timestamp::from_secs(request.issued_before))
        .await
        .map_err(|error| match error {
            IssuedBeforeError::InTheFuture { .. } => ApiError::BadRequest(error.to_string()),
            IssuedBeforeError::Admin(error) => error.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn refused(body: &str) -> ApiError {
        parse_import(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn entries_parse_and_unknown_fields_are_skipped() {
        let jti = Uuid::new_v4();
        let body = format!(
            r#"[{{"jti":"{jti}","exp":5,"note":[1,{{"a":2}}]}}, {{"exp":6,"jti":"{jti}"}}]"#
        );
        let revocations = parse_import(body.as_bytes()).unwrap();
        assert_eq!(
            revocations,
            [
                Revocation::Token {
                    jti,
                    exp: Timestamp::from_secs(5)
                },
                Revocation::Token {
                    jti,
                    exp: Timestamp::from_secs(6)
                },
            ]
        );
        assert!(parse_import(b" [ ] ").unwrap().is_empty());
    }

    #[test]
    fn the_first_bad_entry_is_named() {
        let jti = Uuid::new_v4();
        for (body, position) in [
            ("[0,0,0]".to_owned(), 0),
            (format!(r#"[{{"jti":"{jti}","exp":1}}, [1,2]]"#), 1),
            (
                format!(r#"[{{"jti":"{jti}","exp":1}}, {{"jti":"x","exp":1}}]"#),
                1,
            ),
            (
                format!(r#"[{{"jti":"{jti}","exp":1}}, {{"jti":"{jti}","exp":-1}}]"#),
                1,
            ),
            (
                format!(r#"[{{"jti":"{jti}","exp":1}}, {{"jti":"{jti}","exp":1.5}}]"#),
                1,
            ),
            (format!(r#"[{{"jti":"{jti}"}}]"#), 0),
            (r#"[{"exp":1}]"#.to_owned(), 0),
            (r#"[{"jti":5,"exp":1}]"#.to_owned(), 0),
        ] {
            match refused(&body) {
                ApiError::BadRequest(text) => {
                    assert!(
                        text.starts_with(&format!("entry {position}:")),
                        "{body}: {text}"
                    );
                    assert!(text.ends_with("nothing was imported"), "{text}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_json_is_400_and_a_non_array_422() {
        for truncated in ["[", r#"[{"jti":"#, r#"[{"jti":"x"#, r#"[{"exp":1"#] {
            let malformed = matches!(
                refused(truncated),
                ApiError::BadRequest(ref t) if t.starts_with("malformed JSON")
            );
            assert!(malformed, "{truncated}");
        }
        assert!(
            matches!(refused("[] x"), ApiError::BadRequest(t) if t.starts_with("malformed JSON"))
        );
        assert!(matches!(
            refused(r#"{"jti":1}"#),
            ApiError::Unprocessable(_)
        ));
        assert!(matches!(refused("null"), ApiError::Unprocessable(_)));
    }

    #[test]
    fn more_than_max_import_entries_are_refused() {
        let jti = Uuid::new_v4();
        let entry = format!(r#"{{"jti":"{jti}","exp":1}}"#);
        let body = format!("[{}]", vec![entry.as_str(); MAX_IMPORT].join(","));
        assert_eq!(parse_import(body.as_bytes()).unwrap().len(), MAX_IMPORT);
        let body = format!("[{},0]", vec![entry.as_str(); MAX_IMPORT].join(","));
        assert!(matches!(refused(&body), ApiError::BadRequest(t) if t.contains("100000")));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            json_content_type(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!json_content_type(&HeaderMap::new()));
    }
}
