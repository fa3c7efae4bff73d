//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`; `make test` installs them
//! when missing), against the real host and the real phone-verification
//! component, SMS through the fake Twilio. Screenshots of each view land in
//! `target/tmp/dashboard/` for review.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use durango_e2e::{request, FakeSms, Host, HostOptions, KEY, WAIT};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// A chromedriver of our own on a free port, and a session in headless
/// Chromium.
struct Browser {
    driver: Child,
    client: Client,
    shots: PathBuf,
    /// Chromium's profile folder: it names this browser's processes, so
    /// they can all be stopped, whatever state the test ended in.
    profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver; `make test` installs it)");
        let mut lines = BufReader::new(driver.stdout.take().expect("stdout")).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromedriver says its port before it exits")
                .expect("chromedriver's output");
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').trim().to_string();
            }
        };
        // Keep reading so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let profile = tempfile::tempdir().expect("a profile folder");
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1200",
                     format!("--user-data-dir={}", profile.path().display())],
        });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("the screenshot folder");
        Browser {
            driver,
            client,
            shots,
            profile,
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write the screenshot");
    }

    /// Tries `attempt` every 50 ms until it succeeds; at the deadline, a
    /// screenshot and a panic with `failure` and the last error.
    async fn until<T, F, Fut>(&self, failure: &str, attempt: F) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match attempt().await {
                Ok(value) => return value,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    let name = failure.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
                    self.screenshot(&format!("timeout-{name}")).await;
                    panic!("{failure}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits for the element at `css`. Any error is retried, not only "no
    /// such element": a form post navigates, and a find that meets the
    /// navigation is "aborted by navigation".
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.until(&format!("no {css} on the page"), || async {
            self.client
                .find(Locator::Css(css))
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Waits until `check` holds of the page's text at `css`.
    async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let failure = format!("timed out waiting for {what} at {css}");
        self.until(&failure, || async {
            let element = self.client.find(Locator::Css(css)).await;
            let text = element.map_err(|e| e.to_string())?.text().await;
            let text = text.map_err(|e| e.to_string())?;
            if check(&text) {
                Ok(text)
            } else {
                Err(format!("the text is {text:?}"))
            }
        })
        .await
    }

    /// Clicks the element at `css`, found again if a live redraw replaced
    /// it between finding and clicking.
    async fn click(&self, css: &str) {
        self.retry(css, "click", |e| async move { e.click().await })
            .await
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.retry(css, "type", |e| async move { e.send_keys(text).await })
            .await
    }

    /// Acts on the element at `css`, found again while the act fails (a
    /// live redraw replaced it between finding and acting).
    async fn retry<T, F, Fut>(&self, css: &str, what: &str, act: F) -> T
    where
        F: Fn(fantoccini::elements::Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        self.until(&format!("cannot {what} {css}"), || async {
            act(self.find(css).await).await.map_err(|e| e.to_string())
        })
        .await
    }

    /// Clicks a button whose action asks to confirm, and confirms.
    async fn click_and_confirm(&self, css: &str) {
        self.click(css).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.client.accept_alert().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no confirmation asked after clicking {css}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A value the page's scripts keep: a page reload would lose it.
    async fn mark_page(&self) {
        self.client
            .execute("window.notReloaded = true;", vec![])
            .await
            .expect("mark the page");
    }

    async fn still_same_page(&self) -> bool {
        self.client
            .execute("return window.notReloaded === true;", vec![])
            .await
            .expect("read the mark")
            == json!(true)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium outlives its driver when a test stops half way.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.profile.path().display().to_string()])
            .status();
    }
}

fn start_verification(host: &Host, id: &str, phone: &str) {
    let input = json!({ "phoneNumber": phone, "timeoutSeconds": 600 }).to_string();
    let answer = host.call(
        "POST",
        &format!("/api/orchestrators/E4_SmsPhoneVerification/{id}"),
        Some(&input),
    );
    assert_eq!(answer.status, 202, "{}", answer.text);
}

#[test]
fn an_operator_finds_a_waiting_verification_answers_it_and_terminates_another() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    start_verification(&host, "verify-alice", "+14255550111");
    start_verification(&host, "verify-bob", "+14255550112");
    let code = sms.code_sent_to("+14255550111");
    let bobs_code = sms.code_sent_to("+14255550112");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the WebDriver client");
    runtime.block_on(async {
        let browser = Browser::start().await;
        let b = &browser;

        // Without the key: the login form, and not a trace of an instance.
        b.client.goto(&host.url("/dashboard")).await.unwrap();
        b.find("#login").await;
        let source = b.client.source().await.unwrap();
        assert!(!source.contains("verify-alice"), "{source}");
        b.screenshot("1-login").await;

        // A wrong key is refused on the page.
        b.type_into("#key", "not-the-key").await;
        b.click("#login button").await;
        b.wait_text("#login-error", "the refusal", |t| {
            t.contains("not the system key")
        })
        .await;

        // The right key: the instance list, live.
        b.type_into("#key", KEY).await;
        b.click("#login button").await;
        b.find("#instances-table tr[data-id='verify-alice']").await;
        b.wait_text("#count-Running b", "two running", |t| t == "2")
            .await;
        // Each waiting instance says, in the list, what it waits for.
        b.wait_text(
            "#instances-table tr[data-id='verify-bob'] td.waits",
            "what bob waits for",
            |t| t.contains("event SmsChallengeResponse") && t.contains("timer due"),
        )
        .await;
        b.wait_text("#live", "the live stream", |t| t.contains("live"))
            .await;
        let cookies = b.client.get_all_cookies().await.unwrap();
        let session = cookies
            .iter()
            .find(|c| c.name() == "durango_session")
            .expect("the session cookie");
        assert_eq!(session.http_only(), Some(true), "{session:?}");
        assert_eq!(
            session.same_site().map(|s| s.to_string()).as_deref(),
            Some("Strict"),
            "{session:?}"
        );
        assert!(
            !session.value().contains(KEY),
            "the cookie holds a digest, not the key"
        );
        b.screenshot("2-instances").await;

        // Filter to the one: by id prefix.
        b.type_into("#filter-prefix", "verify-a").await;
        b.click("form.filters button[type=submit]").await;
        b.wait_text("#instances-table tbody", "the filtered list", |t| {
            t.contains("verify-alice") && !t.contains("verify-bob")
        })
        .await;

        // One instance: what it waits for, and its timeline.
        b.click("#instances-table a[href='#/instances/verify-alice']")
            .await;
        b.wait_text("#instance-status", "Running", |t| t == "Running")
            .await;
        let waiting = b
            .wait_text("#waiting", "the awaited event", |t| {
                t.contains("event SmsChallengeResponse") && t.contains("timer")
            })
            .await;
        assert!(waiting.contains("since"), "{waiting}");
        // Reads go through `wait_text`: a live redraw may replace any
        // element between finding it and reading it.
        b.wait_text("#timeline", "the SMS sent, the wait and the timer", |t| {
            t.contains("E4_SendSmsChallenge")
                && t.contains("completed")
                && t.contains("wait SmsChallengeResponse")
                && t.contains("timer")
        })
        .await;
        let version = b
            .retry("#instance-version", "read", |e| async move {
                e.attr("title").await
            })
            .await;
        let apps = host.call("GET", "/admin/apps", None).body;
        let pinned = apps
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["app"] == "phone_verification")
            .unwrap()["version"]
            .clone();
        assert_eq!(
            version.map(Value::from),
            Some(pinned),
            "the pinned version is shown"
        );
        b.wait_text("#instance-input", "the input", |t| {
            t.contains("+14255550111")
        })
        .await;
        b.screenshot("3-instance-waiting").await;

        // Raise the code from the page; it turns Completed without a reload.
        b.mark_page().await;
        let name = b
            .retry(
                "#raise-name",
                "read",
                |e| async move { e.prop("value").await },
            )
            .await;
        assert_eq!(
            name.as_deref(),
            Some("SmsChallengeResponse"),
            "the awaited event is offered"
        );
        b.type_into("#raise-data", &code.to_string()).await;
        b.click_and_confirm("#raise-button").await;
        b.wait_text("#instance-status", "Completed", |t| t == "Completed")
            .await;
        assert!(
            b.still_same_page().await,
            "the page updated without reloading"
        );
        b.wait_text("#instance-output", "the output", |t| t.trim() == "true")
            .await;
        b.wait_text("#waiting", "nothing awaited", |t| t.contains("completed"))
            .await;
        b.wait_text("#timeline", "the received event", |t| {
            t.contains("event SmsChallengeResponse") && t.contains("received")
        })
        .await;
        b.screenshot("4-instance-completed").await;
        assert_eq!(host.status("verify-alice").body["output"], json!(true));

        // Terminate the other one.
        b.client
            .goto(&host.url("/dashboard#/instances/verify-bob"))
            .await
            .unwrap();
        b.wait_text("#instance-status", "Running", |t| t == "Running")
            .await;
        // A change made elsewhere (a wrong code through the API) shows on
        // the open page: only the host's live events can bring it.
        b.mark_page().await;
        let wrong = ((bobs_code + 1) % 10_000).to_string();
        assert_eq!(
            host.raise("verify-bob", "SmsChallengeResponse", &wrong)
                .status,
            202
        );
        b.wait_text("#instance-custom-status", "tries left", |t| {
            t.contains("\"triesLeft\": 3")
        })
        .await;
        assert!(
            b.still_same_page().await,
            "the page updated without reloading"
        );
        b.type_into("#action-reason", "wrong number").await;
        b.click_and_confirm("#terminate-button").await;
        b.wait_text("#instance-status", "Terminated", |t| t == "Terminated")
            .await;
        b.wait_text("#timeline", "the termination", |t| {
            t.contains("terminated: wrong number")
        })
        .await;
        b.screenshot("5-instance-terminated").await;
        let status = host.status("verify-bob");
        assert_eq!(status.body["runtimeStatus"], "Terminated");
        assert_eq!(status.body["output"], "wrong number");

        // The apps, with the version's instances.
        b.client.goto(&host.url("/dashboard#/apps")).await.unwrap();
        b.wait_text("[data-app='phone_verification']", "the app", |t| {
            t.contains("E4_SmsPhoneVerification") && t.contains("current")
        })
        .await;
        b.screenshot("6-apps").await;

        // Deploy by upload (the file input takes the component's path): a
        // refusal is shown with its reason; the app is named after the file.
        let hello = durango_e2e::wasm("hello_sequence").display().to_string();
        b.type_into("#deploy-name", "uploaded_hello").await;
        b.type_into("#deploy-file", &hello).await;
        b.click_and_confirm("form.card button[type=submit]").await;
        b.wait_text("#toast", "the refusal", |t| {
            t.contains("E1_HelloSequence is already deployed by app hello_sequence")
        })
        .await;
        b.client
            .goto(&host.url("/dashboard#/instances"))
            .await
            .unwrap();
        b.client.goto(&host.url("/dashboard#/apps")).await.unwrap();
        let approval = durango_e2e::wasm("approval").display().to_string();
        b.type_into("#deploy-file", &approval).await;
        b.click_and_confirm("form.card button[type=submit]").await;
        b.wait_text("[data-app='approval']", "the uploaded app", |t| {
            t.contains("orchestrator") && t.contains("current")
        })
        .await;
        let versions = host.call("GET", "/admin/apps/approval/versions", None);
        assert_eq!(versions.status, 200, "{}", versions.text);

        // Signing out leaves nothing to see.
        b.client.goto(&host.url("/dashboard")).await.unwrap();
        b.click("header form button").await;
        b.find("#login").await;
        let source = b.client.source().await.unwrap();
        assert!(!source.contains("verify-"), "{source}");

        browser.client.clone().close().await.unwrap();
    });
}

#[test]
fn the_session_opens_nothing_to_other_sites_and_the_data_needs_it() {
    let host = Host::start(HostOptions::with_apps(&["hello_sequence"]));
    let id = host.start_orchestration("E1_HelloSequence", "null");
    host.wait_finished(&id);

    // The page's data without a session or key: refused.
    let bare = request("GET", &host.url("/dashboard/api/summary"), &[], None);
    assert_eq!(bare.status, 401, "{}", bare.text);
    let bare = request(
        "GET",
        &host.url(&format!("/dashboard/api/instances/{id}")),
        &[],
        None,
    );
    assert_eq!(bare.status, 401, "{}", bare.text);
    let page = request("GET", &host.url("/dashboard"), &[], None);
    assert_eq!(page.status, 200);
    assert!(page.text.contains("id=\"login\""), "{}", page.text);
    assert!(!page.text.contains(&id));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|csp| csp.contains("frame-ancestors 'none'")));

    // A login posted from another site's page is refused.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let foreign = request(
        "POST",
        &host.url("/dashboard/login"),
        &[form[0], ("origin", "http://evil.example")],
        Some(format!("key={KEY}").as_bytes()),
    );
    assert_eq!(foreign.status, 403, "{}", foreign.text);
    assert!(foreign.header("set-cookie").is_none());

    // The right key from the page itself sets the cookie.
    let login = request(
        "POST",
        &host.url("/dashboard/login"),
        &[form[0], ("origin", &host.base)],
        Some(format!("key={KEY}").as_bytes()),
    );
    assert_eq!(login.status, 303, "{}", login.text);
    let cookie = login.header("set-cookie").expect("the session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(KEY), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    fn with<'a>(session: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut headers = vec![("cookie", session)];
        headers.extend_from_slice(extra);
        headers
    }

    // With the session: the page's data, and every management read.
    let summary = request(
        "GET",
        &host.url("/dashboard/api/summary"),
        &with(&session, &[]),
        None,
    );
    assert_eq!(summary.status, 200, "{}", summary.text);
    assert_eq!(summary.body["counts"]["Completed"], 1);
    let detail = request(
        "GET",
        &host.url(&format!("/dashboard/api/instances/{id}")),
        &with(&session, &[]),
        None,
    );
    assert_eq!(detail.status, 200, "{}", detail.text);
    assert_eq!(detail.body["status"], "Completed");
    assert_eq!(detail.body["waiting"], json!([]));
    let activities: Vec<&Value> = detail.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["step"] == "activity")
        .collect();
    assert_eq!(activities.len(), 3, "{}", detail.text);
    assert!(activities
        .iter()
        .all(|a| a["ended"]["outcome"] == "completed" && a["ended"]["attempts"] == 1));

    // A change with the cookie alone (what another site's form could make
    // the browser send) is refused; the page's header makes it go through,
    // and what it hands out leaves the key out.
    let restart = format!("/runtime/webhooks/durabletask/instances/{id}/restart");
    let forged = request("POST", &host.url(&restart), &with(&session, &[]), None);
    assert_eq!(forged.status, 403, "{}", forged.text);
    let from_page = request(
        "POST",
        &host.url(&restart),
        &with(&session, &[("x-durango-dashboard", "1")]),
        None,
    );
    assert_eq!(from_page.status, 202, "{}", from_page.text);
    assert!(!from_page.text.contains(KEY), "{}", from_page.text);

    // A stale or made-up session is no session.
    let made_up = request(
        "GET",
        &host.url("/dashboard/api/summary"),
        &[("cookie", "durango_session=00ff")],
        None,
    );
    assert_eq!(made_up.status, 401, "{}", made_up.text);
}
