//! The dashboard (docs/contract.md §6.5) at `GET /`: one self-contained page (inline CSS and
//! JavaScript, charts drawn as SVG by hand, nothing fetched from elsewhere) that loads the
//! service's kept samples once (`/api/v1/pipeline/history`, so a reload keeps the charts) and
//! reads `/api/v1/pipeline` and `/api/v1/summary` every two seconds, with the token it is opened with
//! (`/#token=<API_TOKEN>`, docs/read-api.md "Access"). The page itself needs no token: it is
//! only code.

use vault_runtime::get_or_head;
use warp::{Filter, Reply};

/// The page, compiled into the binary.
pub const PAGE: &str = include_str!("../assets/dashboard.html");

/// `GET /` (exactly; `HEAD` too): the page.
pub fn route() -> impl Filter<Extract = (Box<dyn Reply>,), Error = warp::Rejection> + Clone {
    warp::path::end().and(get_or_head()).map(|| {
        let page = warp::reply::html(PAGE);
        // Always the current build's page: it is small, and a stale one would call an old API.
        Box::new(warp::reply::with_header(page, "cache-control", "no-store")) as Box<dyn Reply>
    })
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for remote in ["https://", "<link", "<script src", "@import", "url("] {
            assert!(!PAGE.contains(remote), "the dashboard refers to {remote}");
        }
        let namespace = "http://www.w3.org/2000/svg";
        assert_eq!(
            PAGE.matches("http://").count(),
            PAGE.matches(namespace).count()
        );
    }

    #[test]
    fn the_page_reads_the_api_it_is_served_with() {
        assert!(PAGE.contains("/api/v1/pipeline"));
        assert!(PAGE.contains("/api/v1/summary"));
        // The charts start from the service's kept samples.
        assert!(PAGE.contains("/api/v1/pipeline/history"));
    }

    #[test]
    fn the_page_sends_the_token_it_is_given_in_the_fragment() {
        assert!(PAGE.contains("location.hash"));
        assert!(PAGE.contains(r#"Authorization: "Bearer " + apiToken"#));
        // Taken out of the address bar once read.
        assert!(PAGE.contains("window.history.replaceState"));
    }
}
