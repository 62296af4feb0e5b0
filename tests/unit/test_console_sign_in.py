"""The dev server's sign-in by URL (`?token=KEY`) over generated paths and tokens: a key gets a
session cookie and a redirect to the same page on this site; anything else gets nothing."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client
from werkzeug.wrappers import Response

from chimera.stack import ConsoleSignIn
from shared.keys import SESSION_COOKIE, Keys, local_credential
from tests.fakes import FakeStateStore


def _behind(tmp_path) -> tuple[Client, Keys]:
    keys = Keys(FakeStateStore(), tmp_path / "home")
    app = ConsoleSignIn(lambda environ, start: Response("page")(environ, start), lambda: keys)
    return Client(app), keys


paths = st.text(st.characters(codec="utf-8", exclude_characters="?#"), max_size=40)
paths |= st.sampled_from(["/evil.example", "//x.example", "\\x.example", "/\\x", "%2F%2Fx"])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, extra=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8)))
def test_a_key_signs_in_and_lands_on_the_same_page_of_this_site(tmp_path, path, extra):
    client, keys = _behind(tmp_path)
    extra.pop("token", None)
    query = {**extra, "token": local_credential(keys.home)}
    response = client.get("/" + path, query_string=query)
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert not location.scheme and not location.netloc  # never another site
    assert response.headers["Location"].startswith("/")
    # Browsers read "//host" and "/\\host" as another site.
    assert not response.headers["Location"].startswith(("//", "/\\"))
    assert "token=" not in (location.query or "")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and local_credential(keys.home) not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = cookie.split(";")[0].split("=", 1)[1]
    assert keys.session_caller(session) == "local"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, token=st.text(max_size=60))
def test_anything_but_a_key_is_401_and_sets_no_cookie(tmp_path, path, token):
    client, _ = _behind(tmp_path)
    response = client.get("/" + path, query_string={"token": token})
    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_revoked_key_cannot_sign_in(tmp_path):
    client, keys = _behind(tmp_path)
    _, token = keys.create("console")
    keys.revoke("console")
    assert client.get("/runs", query_string={"token": token}).status_code == 401


def test_a_post_with_a_token_in_the_url_is_not_a_sign_in(tmp_path):
    client, keys = _behind(tmp_path)
    response = client.post("/runs", query_string={"token": local_credential(keys.home)})
    assert response.status_code == 200 and response.get_data(as_text=True) == "page"
    assert "Set-Cookie" not in response.headers
