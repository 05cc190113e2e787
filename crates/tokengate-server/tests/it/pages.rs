//! The server-rendered pages over HTTP, with cookies handled by hand the way a
//! browser does: the sign-in form and its messages, the session cookie's flags, the CSRF
//! defences of every form, the sessions list, signing one session or every session out,
//! and renewing an expired page session with the refresh cookie.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Method, StatusCode};

/// A cookie the way the browser stores it.
#[derive(Clone, Debug)]
struct StoredCookie {
    value: String,
    path: String,
}

/// A minimal browser: no redirects followed, a cookie jar honouring `Path` and `Max-Age=0`,
/// and an `Origin` header on every POST (as browsers send on form posts).
struct Browser {
    http: reqwest::Client,
    base: String,
    jar: BTreeMap<String, StoredCookie>,
    /// The raw `Set-Cookie` values of the last answer.
    last_set_cookies: Vec<String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    retry_after: Option<String>,
    text: String,
}

impl Page {
    /// The hidden CSRF field of the page.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self
            .text
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.text))
            + marker.len();
        let end = self.text[start..].find('"').unwrap() + start;
        self.text[start..end].to_owned()
    }

    /// The session ids of the sign-out forms on the sessions page.
    fn session_ids(&self) -> Vec<String> {
        self.text
            .split("action=\"/account/sessions/")
            .skip(1)
            .map(|rest| rest.split('/').next().unwrap().to_owned())
            .collect()
    }

    #[track_caller]
    fn expect_redirect(&self, to: &str) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "body: {}", self.text);
        assert_eq!(self.location.as_deref(), Some(to));
    }
}

impl Browser {
    fn new(base: &str, user_agent: &str) -> Browser {
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Browser {
            http,
            base: base.to_owned(),
            jar: BTreeMap::new(),
            last_set_cookies: Vec::new(),
        }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.jar.get(name).map(|c| c.value.clone())
    }

    fn cookie_header(&self, path: &str) -> String {
        self.jar
            .iter()
            .filter(|(_, c)| path.starts_with(&c.path))
            .map(|(k, c)| format!("{k}={}", c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
        origin: Option<&str>,
    ) -> Page {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header(path));
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        if let Some(form) = form {
            let body: String = form
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let location = header(LOCATION.as_str());
        let retry_after = header("retry-after");
        self.last_set_cookies = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for set in self.last_set_cookies.clone() {
            let mut parts = set.split(';').map(str::trim);
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let mut path = "/".to_owned();
            let mut remove = false;
            for attr in parts {
                if let Some(p) = attr.strip_prefix("Path=") {
                    path = p.to_owned();
                }
                if attr == "Max-Age=0" {
                    remove = true;
                }
            }
            if remove {
                self.jar.remove(name);
            } else {
                self.jar.insert(
                    name.to_owned(),
                    StoredCookie {
                        value: value.to_owned(),
                        path,
                    },
                );
            }
        }
        let text = response.text().await.unwrap();
        Page {
            status,
            location,
            retry_after,
            text,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None, None).await
    }

    /// A same-origin form post.
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.send(Method::POST, path, Some(form), Some(&origin))
            .await
    }

    /// Open the sign-in page and submit it.
    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.text);
        let csrf = form.csrf();
        self.post(
            "/signin",
            &[("email", email), ("password", password), ("csrf", &csrf)],
        )
        .await
    }

    async fn sign_in_ok(&mut self, email: &str) {
        self.sign_in(email, PASSWORD)
            .await
            .expect_redirect("/account/sessions");
        assert!(self.cookie("tokengate_session").is_some());
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn verify_status(server: &Server, token: &str) -> StatusCode {
    server.client().get("/v1/verify", Some(token)).await.status
}

#[tokio::test]
async fn wrong_password_shows_the_message_and_sets_no_session() {
    let server = Server::start();
    let email = unique_email("pages-wrong");
    server.client().signup_ok(&email).await;
    let mut browser = Browser::new(
        &server.url(),
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    );

    let form = browser.get("/").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.text.contains("name=\"viewport\""), "{}", form.text);
    assert!(form.text.contains("<label for=\"email\""), "{}", form.text);

    let page = browser.sign_in(&email, "not the password at all").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.text);
    assert!(
        page.text.contains("Wrong email or password."),
        "{}",
        page.text
    );
    assert!(browser.cookie("tokengate_session").is_none());
    // The email is kept in the form, escaped.
    assert!(page.text.contains(&email));
}

#[tokio::test]
async fn repeated_failures_show_the_throttle_message_with_the_wait() {
    let server = Server::start_with_env(&[("TOKENGATE_SIGNIN_MAX_FAILURES", "2")]);
    let email = unique_email("pages-throttle");
    server.client().signup_ok(&email).await;
    let mut browser = Browser::new(&server.url(), "pages-test");
    for _ in 0..2 {
        let page = browser.sign_in(&email, "wrong password here").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.text);
    }
    let page = browser.sign_in(&email, PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.text);
    assert!(
        page.text.contains("Too many attempts, try again in "),
        "{}",
        page.text
    );
    let retry: u64 = page.retry_after.expect("Retry-After").parse().unwrap();
    assert!(page.text.contains(&format!("try again in {retry} s.")));
    assert!(browser.cookie("tokengate_session").is_none());
}

#[tokio::test]
async fn sign_in_sets_an_http_only_lax_cookie_without_secure_on_loopback() {
    let server = Server::start();
    let email = unique_email("pages-cookie");
    server.client().signup_ok(&email).await;
    let mut browser = Browser::new(&server.url(), "pages-test");
    browser.sign_in_ok(&email).await;

    let session = browser
        .last_set_cookies
        .iter()
        .find(|c| c.starts_with("tokengate_session="))
        .expect("session cookie")
        .clone();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=900"] {
        assert!(session.contains(flag), "{flag} missing: {session}");
    }
    assert!(!session.contains("Secure"), "loopback: {session}");
    let refresh = browser
        .last_set_cookies
        .iter()
        .find(|c| c.starts_with("tokengate_refresh="))
        .expect("refresh cookie");
    assert!(
        refresh.contains("HttpOnly") && refresh.contains("Path=/account"),
        "{refresh}"
    );

    // The cookie is the access token: the API accepts it.
    let token = browser.cookie("tokengate_session").unwrap();
    assert_eq!(verify_status(&server, &token).await, StatusCode::OK);
    // And a signed-in browser skips the form.
    browser.get("/").await.expect_redirect("/account/sessions");
}

#[tokio::test]
async fn unauthenticated_sessions_page_redirects_to_sign_in() {
    let server = Server::start();
    let mut browser = Browser::new(&server.url(), "pages-test");
    browser.get("/account/sessions").await.expect_redirect("/");
}

#[tokio::test]
async fn forms_without_the_csrf_field_are_refused() {
    let server = Server::start();
    let email = unique_email("pages-csrf");
    server.client().signup_ok(&email).await;
    let mut browser = Browser::new(&server.url(), "pages-test");
    browser.sign_in_ok(&email).await;
    let page = browser.get("/account/sessions").await;
    let id = page.session_ids().pop().expect("a session");

    let refused = browser
        .post(&format!("/account/sessions/{id}/signout"), &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let wrong = browser
        .post(
            "/account/signout-all",
            &[("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.text);
    // A sign-in form without the field is refused too.
    let signin = browser
        .post("/signin", &[("email", &email), ("password", PASSWORD)])
        .await;
    assert_eq!(signin.status, StatusCode::FORBIDDEN, "{}", signin.text);

    // Nothing was signed out.
    let token = browser.cookie("tokengate_session").unwrap();
    assert_eq!(verify_status(&server, &token).await, StatusCode::OK);
}

#[tokio::test]
async fn cross_origin_form_posts_are_refused() {
    let server = Server::start();
    let email = unique_email("pages-origin");
    server.client().signup_ok(&email).await;
    let mut browser = Browser::new(&server.url(), "pages-test");
    browser.sign_in_ok(&email).await;
    let page = browser.get("/account/sessions").await;
    let csrf = page.csrf();
    let id = page.session_ids().pop().unwrap();

    let evil = Some("https://evil.example");
    let form: &[(&str, &str)] = &[("csrf", &csrf)];
    let one = browser
        .send(
            Method::POST,
            &format!("/account/sessions/{id}/signout"),
            Some(form),
            evil,
        )
        .await;
    assert_eq!(one.status, StatusCode::FORBIDDEN, "{}", one.text);
    let all = browser
        .send(Method::POST, "/account/signout-all", Some(form), evil)
        .await;
    assert_eq!(all.status, StatusCode::FORBIDDEN, "{}", all.text);
    let signin_form: &[(&str, &str)] =
        &[("email", &email), ("password", PASSWORD), ("csrf", &csrf)];
    let signin = browser
        .send(Method::POST, "/signin", Some(signin_form), evil)
        .await;
    assert_eq!(signin.status, StatusCode::FORBIDDEN, "{}", signin.text);

    let token = browser.cookie("tokengate_session").unwrap();
    assert_eq!(verify_status(&server, &token).await, StatusCode::OK);
}

#[tokio::test]
async fn sessions_page_lists_sessions_and_signs_another_one_out() {
    let server = Server::start();
    let email = unique_email("pages-list");
    server.client().signup_ok(&email).await;
    let mut laptop = Browser::new(
        &server.url(),
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    );
    let mut phone = Browser::new(
        &server.url(),
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
    );
    laptop.sign_in_ok(&email).await;
    phone.sign_in_ok(&email).await;
    let phone_token = phone.cookie("tokengate_session").unwrap();
    let phone_sid = jwt_claims(&phone_token)["sid"].as_str().unwrap().to_owned();

    let page = laptop.get("/account/sessions").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("Safari on macOS"), "{}", page.text);
    assert!(page.text.contains("Chrome on Android"), "{}", page.text);
    assert!(page.text.contains("127.0.0.1"), "{}", page.text);
    assert_eq!(
        page.text.matches("This device</span>").count(),
        1,
        "{}",
        page.text
    );
    let ids = page.session_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&phone_sid));

    let done = laptop
        .post(
            &format!("/account/sessions/{phone_sid}/signout"),
            &[("csrf", &page.csrf())],
        )
        .await;
    done.expect_redirect("/account/sessions?m=ended");
    assert_eq!(
        verify_status(&server, &phone_token).await,
        StatusCode::UNAUTHORIZED
    );

    let after = laptop.get("/account/sessions?m=ended").await;
    assert!(
        after.text.contains("That session is signed out."),
        "{}",
        after.text
    );
    assert_eq!(after.session_ids().len(), 1);
    // The signed-out phone is sent to the sign-in page with a message.
    phone
        .get("/account/sessions")
        .await
        .expect_redirect("/?m=revoked");
    let signin = phone.get("/?m=revoked").await;
    assert!(
        signin.text.contains("This session was signed out."),
        "{}",
        signin.text
    );
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_and_clears_the_cookies() {
    let server = Server::start();
    let email = unique_email("pages-all");
    server.client().signup_ok(&email).await;
    let mut one = Browser::new(&server.url(), "pages-test one");
    let mut two = Browser::new(&server.url(), "pages-test two");
    one.sign_in_ok(&email).await;
    two.sign_in_ok(&email).await;
    let one_token = one.cookie("tokengate_session").unwrap();
    let two_token = two.cookie("tokengate_session").unwrap();

    let page = one.get("/account/sessions").await;
    let done = one
        .post("/account/signout-all", &[("csrf", &page.csrf())])
        .await;
    done.expect_redirect("/?m=signedout_all");
    assert!(one.cookie("tokengate_session").is_none());
    assert!(one.cookie("tokengate_refresh").is_none());
    assert_eq!(
        verify_status(&server, &one_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        verify_status(&server, &two_token).await,
        StatusCode::UNAUTHORIZED
    );
    one.get("/account/sessions").await.expect_redirect("/");
    // Signing in again right away works.
    one.sign_in_ok(&email).await;
}

#[tokio::test]
async fn signing_out_this_device_goes_back_to_the_sign_in_page() {
    let server = Server::start();
    let email = unique_email("pages-self");
    server.client().signup_ok(&email).await;
    let mut browser = Browser::new(&server.url(), "pages-test");
    browser.sign_in_ok(&email).await;
    let token = browser.cookie("tokengate_session").unwrap();
    let sid = jwt_claims(&token)["sid"].as_str().unwrap().to_owned();
    let page = browser.get("/account/sessions").await;
    browser
        .post(
            &format!("/account/sessions/{sid}/signout"),
            &[("csrf", &page.csrf())],
        )
        .await
        .expect_redirect("/?m=signedout");
    assert!(browser.cookie("tokengate_session").is_none());
    assert_eq!(
        verify_status(&server, &token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_expired_page_session_is_renewed_with_the_refresh_cookie() {
    let server =
        Server::start_with_env(&[("TOKENGATE_ACCESS_TTL", "1s"), ("TOKENGATE_LEEWAY", "0s")]);
    let email = unique_email("pages-renew");
    server.client().signup_ok(&email).await;
    let mut browser = Browser::new(&server.url(), "pages-test");
    browser.sign_in_ok(&email).await;
    let first = browser.cookie("tokengate_session").unwrap();
    let sid = jwt_claims(&first)["sid"].clone();
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    // The expired cookie is still sent here (the jar ignores Max-Age): renewed, then back.
    browser
        .get("/account/sessions")
        .await
        .expect_redirect("/account/sessions");
    let renewed = browser.cookie("tokengate_session").unwrap();
    assert_ne!(renewed, first);
    assert_eq!(jwt_claims(&renewed)["sid"], sid, "same session");

    // A browser that dropped the expired cookie is renewed the same way.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    browser.jar.remove("tokengate_session");
    browser
        .get("/account/sessions")
        .await
        .expect_redirect("/account/sessions");
    assert!(browser.cookie("tokengate_session").is_some());
    let page = browser.get("/account/sessions").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);

    // Without a usable refresh cookie: back to sign-in with the message.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    browser.jar.remove("tokengate_refresh");
    browser
        .get("/account/sessions")
        .await
        .expect_redirect("/?m=expired");
    let signin = browser.get("/?m=expired").await;
    assert!(
        signin
            .text
            .contains("Your session expired. Please sign in again."),
        "{}",
        signin.text
    );
}
