//! A browser as far as HTTP goes, for tests that walk the pages without Chromium: no
//! redirects followed, one cookie per origin, forms and multipart uploads as browsers send
//! them; and the page details such tests read (redirects, hidden fields, verification codes).

/// An HTTP client that does not follow redirects and keeps one cookie per origin.
pub struct Browser {
    pub http: reqwest::Client,
    pub cookies: std::collections::HashMap<String, String>,
}

pub fn origin(url: &str) -> String {
    url.split('/').take(3).collect::<Vec<_>>().join("/")
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Default::default(),
        }
    }
    pub fn with_cookie(&self, url: &str, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.cookies.get(&origin(url)) {
            Some(c) => req.header("cookie", c),
            None => req,
        }
    }
    pub fn remember(&mut self, url: &str, r: &reqwest::Response) {
        if let Some(c) = r.headers().get("set-cookie") {
            let c = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookies.insert(origin(url), c);
        }
    }
    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        let r = self
            .with_cookie(url, self.http.get(url))
            .send()
            .await
            .unwrap();
        self.remember(url, &r);
        r
    }
    pub async fn text(&mut self, url: &str) -> String {
        self.get(url).await.text().await.unwrap()
    }
    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let r = self
            .with_cookie(url, self.http.post(url).form(form))
            .send()
            .await
            .unwrap();
        self.remember(url, &r);
        r
    }
    pub async fn upload(
        &mut self,
        url: &str,
        csrf: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        self.upload_as(url, csrf, "file", name, bytes).await
    }
    pub async fn upload_as(
        &mut self,
        url: &str,
        csrf: &str,
        field: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        // multipart/form-data, written out as a browser sends it.
        let boundary = "----xalo-test-boundary-7MA4YWxkTrZu0gW";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{csrf}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend(bytes);
        body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
        let r = self
            .with_cookie(
                url,
                self.http
                    .post(url)
                    .header(
                        "content-type",
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .body(body),
            )
            .send()
            .await
            .unwrap();
        self.remember(url, &r);
        r
    }
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no redirect: {}", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[i..i + html[i..].find('"').unwrap()].to_owned()
}

/// The 4-digit verification code a Mobile-ID page shows.
pub fn verification_code(html: &str) -> String {
    let i = html
        .find("class=\"code\"")
        .unwrap_or_else(|| panic!("no code in {html}"));
    let rest = &html[i..];
    let start = rest.find('>').unwrap() + 1;
    rest[start..start + 4].to_owned()
}
