#!/usr/bin/python3
"""The web console (/console) in a real browser: headless Chromium driven by Selenium.

Usage (Debian's python3, which has python3-selenium; scripts/browser-test runs it):

    /usr/bin/python3 Tests/browser/console_test.py --citymesh .build/debug/citymesh [--screenshots DIR]

It starts `citymesh demo` (three cities on loopback), then, as hangzhou's admin: logs in,
checks keyboard navigation, edits the sharing policy in the browser (check, diff, explain,
apply); and as an auditor: sees the policy read-only, filters the ledger, opens the newest
policy.applied entry and waits for console.js to verify its inclusion proof with Web Crypto,
and reconciles hangzhou's and suzhou's evidence bundles. With --screenshots, it saves the
PNGs of docs/console (1280 pixels wide). --keep keeps the temporary directory (the federation,
the bundles, chromedriver.log); it is always kept when a check fails.

Exit status 0 when every check held. On a failure it prints what was expected, the page it
was on, an excerpt of that page and the tail of the demo's output, and exits 1. Waits have
generous timeouts (shared CI machines are slow); nothing asserts how fast anything is.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    from selenium import webdriver
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
        WebDriverException,
    )
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    sys.exit("console_test.py: the Python module selenium is missing: install the Debian package python3-selenium "
             "and run this with /usr/bin/python3")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DEMO_TIMEOUT = 240      # the demo builds a federation and runs nine checked steps
PAGE_TIMEOUT = 60       # a page condition (an element, a text, a URL)
CHECKPOINT_TIMEOUT = 120  # a new ledger entry reaching a signed checkpoint
COMMAND_TIMEOUT = 120   # a citymesh CLI command
STOP_TIMEOUT = 60       # the demo stopping its nodes after SIGINT
WIDTH, HEIGHT = 1280, 900


class CheckFailed(Exception):
    """A check did not hold; the message says what was expected."""


STARTED = time.monotonic()


def log(message):
    """A progress line, with the seconds since the test started."""
    print(f"{time.monotonic() - STARTED:6.1f}s  {message}", flush=True)


# MARK: The demo federation

class Demo:
    """`citymesh demo --dir DIR` as a subprocess, its output collected by a thread."""

    def __init__(self, citymesh, directory):
        self.citymesh = citymesh
        self.directory = directory
        self.lines = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.process = None
        self.exit_status = None

    def start(self):
        self.process = subprocess.Popen(
            [self.citymesh, "demo", "--dir", self.directory],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, encoding="utf-8", errors="replace", bufsize=1,
            start_new_session=True,  # its own process group: the test signals it, not the terminal
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))
            if "Press Ctrl-C to stop every node." in line:
                self.ready.set()

    def output(self):
        with self.lock:
            return list(self.lines)

    def tail(self, n=40):
        return "\n".join(self.output()[-n:])

    def wait_ready(self):
        deadline = time.monotonic() + DEMO_TIMEOUT
        while not self.ready.wait(1):
            if self.process.poll() is not None:
                raise CheckFailed(f"the demo to keep running until Ctrl-C; it exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                raise CheckFailed(f"the demo to print 'Press Ctrl-C to stop every node.' within {DEMO_TIMEOUT} s")

    def admin_url(self, city):
        pattern = re.compile(r"^\s+" + re.escape(city) + r"\s+(http://\S+)\s+--dir\s")
        for line in self.output():
            m = pattern.match(line)
            if m:
                return m.group(1).rstrip("/")
        raise CheckFailed(f"a line '  {city}  http://…  --dir …' with {city}'s admin URL in the demo's output")

    def stop(self):
        """SIGINT, as Ctrl-C; returns its exit status (None if it had to be killed)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"!! the demo did not stop within {STOP_TIMEOUT} s of SIGINT: killing its process group")
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait()
                return None
        self.exit_status = self.process.returncode
        return self.exit_status


def run(citymesh, *args):
    """A citymesh CLI command; its stdout, or a failure with its output."""
    command = [citymesh, *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"'{' '.join(command)}' to finish within {COMMAND_TIMEOUT} s")
    if done.returncode != 0:
        raise CheckFailed(f"'{' '.join(command)}' to exit 0; it exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


# MARK: The browser

class Browser:
    def __init__(self, workdir, screenshots):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in [
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WIDTH},{HEIGHT}",
            "--force-device-scale-factor=1", "--hide-scrollbars", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync", "--password-store=basic",
            f"--user-data-dir={os.path.join(workdir, 'chromium-profile')}",
        ]:
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver_log = os.path.join(workdir, "chromedriver.log")
        service = Service(CHROMEDRIVER, log_path=self.driver_log)
        self.driver = webdriver.Chrome(service=service, options=options)
        self.screenshots = screenshots
        self.console = []   # (url, entry) of the browser's console log
        try:
            self.driver.set_page_load_timeout(PAGE_TIMEOUT * 2)
            self.driver.set_script_timeout(PAGE_TIMEOUT)
            # --window-size is the window's; the page gets less. Grow the window so the page gets 1280x900.
            window, page = self.driver.get_window_size(), self.viewport()
            self.chrome = (window["width"] - page[0], window["height"] - page[1])
            self.set_viewport(WIDTH, HEIGHT)
        except BaseException:
            self.driver.quit()
            raise

    def viewport(self):
        return tuple(self.driver.execute_script("return [window.innerWidth, window.innerHeight]"))

    def set_viewport(self, width, height):
        self.driver.set_window_size(width + self.chrome[0], height + self.chrome[1])

    def quit(self):
        try:
            self.collect_log()
        except WebDriverException:
            pass
        self.driver.quit()

    # Waiting

    def wait(self, expected, condition, timeout=PAGE_TIMEOUT):
        """Wait until condition(driver) is truthy; its value. `expected` says what, for the failure."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.25,
                                 ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(condition)
        except TimeoutException:
            raise CheckFailed(f"{expected} (waited {timeout} s)")

    def element(self, css, expected=None, timeout=PAGE_TIMEOUT):
        return self.wait(expected or f"an element {css} on the page", EC.presence_of_element_located((By.CSS_SELECTOR, css)), timeout)

    def loaded(self):
        self.wait("the page to finish loading", lambda d: d.execute_script("return document.readyState") == "complete")
        self.collect_log()

    def get(self, path):
        self.driver.get(self.base + path)
        self.loaded()

    def submit_by(self, element, expected):
        """Click a submit button (or link) and wait for the next page to replace this one."""
        # A mark on this page's window: the next page has a new window object without it. (Not
        # staleness_of: chromedriver may answer a check on an element mid-navigation with an error.)
        mark = f"page-{time.monotonic_ns()}"
        self.driver.execute_script("window.citymeshTestMark = arguments[0];", mark)
        element.click()

        def replaced(d):
            try:
                return d.execute_script(
                    "return window.citymeshTestMark !== arguments[0] && document.readyState === 'complete';", mark)
            except WebDriverException:  # the old page went away while the script ran
                return False
        self.wait(expected, replaced)
        self.loaded()

    def path(self):
        """The current URL without the origin."""
        url = self.driver.current_url
        return url[len(self.base):] if url.startswith(self.base) else url

    def text(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def exists(self, css):
        return len(self.driver.find_elements(By.CSS_SELECTOR, css)) > 0

    def collect_log(self):
        for entry in self.driver.get_log("browser"):
            self.console.append((self.driver.current_url, entry))

    # Screenshots

    def shoot(self, name, scroll_to=None, fit=None):
        """A 1280-wide PNG of the viewport; `scroll_to` puts an element at the top, `fit` grows the
        window so that element fits whole (then the window goes back to 1280x900)."""
        if not self.screenshots:
            return
        d = self.driver
        try:
            if fit:
                height = d.execute_script(
                    "const e = document.querySelector(arguments[0]); return Math.ceil(e.getBoundingClientRect().height);", fit)
                self.set_viewport(WIDTH, max(HEIGHT, height + 40))
            if scroll_to:
                d.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'start'}); window.scrollBy(0, -12);", scroll_to)
            else:
                d.execute_script("window.scrollTo(0, 0)")
            # The focus ring and caret would otherwise land in the picture.
            d.execute_script("if (document.activeElement) document.activeElement.blur();")
            size = self.viewport()
            if size[0] != WIDTH:
                raise CheckFailed(f"a page {WIDTH} pixels wide for the screenshot {name}; it is {size[0]}")
            file = os.path.join(self.screenshots, name)
            if not d.save_screenshot(file):
                raise CheckFailed(f"a screenshot saved as {file}")
            log(f"   screenshot {file}")
        finally:
            if fit:
                self.set_viewport(WIDTH, HEIGHT)


# MARK: The checks

def login(b, token, role):
    b.get("/console")
    b.wait("/console to redirect to the login page, as nobody is logged in",
           lambda d: b.path().startswith("/console/login"))
    field = b.element("#token", "the login page's token field #token")
    field.send_keys(token)
    b.submit_by(b.driver.find_element(By.CSS_SELECTOR, "form[action='/console/login'] button[type=submit]"),
                "the login form to be submitted")
    if b.exists("#login-error"):
        raise CheckFailed(f"the {role} token to be accepted; the login page says: {b.text('#login-error')}")
    b.wait("the overview (/console) after logging in", lambda d: b.path() == "/console")
    shown = b.text("header .who .role")
    if shown != role:
        raise CheckFailed(f"the header to show the role '{role}'; it shows '{shown}'")
    log(f"ok  logged in as {role}")


def explain_access(b, container, field):
    """The access a field has in the explain table inside #container."""
    rows = b.driver.find_elements(By.CSS_SELECTOR, f"#{container} table.explain tbody tr")
    for row in rows:
        if row.find_element(By.CSS_SELECTOR, "th").text.strip() == field:
            return row.find_element(By.CSS_SELECTOR, "td.access").text.strip()
    raise CheckFailed(f"a row for field '{field}' in the explain table of #{container}")


def expect_access(b, container, field, access):
    got = explain_access(b, container, field)
    if got != access:
        raise CheckFailed(f"#{container} to show field '{field}' with access '{access}'; it shows '{got}'")


def check_keyboard(b):
    """Tab from the top of a page: the skip link first, then the navigation; Enter on the skip link
    moves the focus to the main content."""
    b.get("/console")
    active = lambda: b.driver.switch_to.active_element
    tag = active().tag_name.lower()
    if tag != "body":
        raise CheckFailed(f"nothing focused on a freshly loaded console page; <{tag}> is")
    expected = [("a", "Skip to content", "#main")] + [
        ("a", label, href) for label, href in [("Overview", "/console"), ("Datasets", "/console/datasets"), ("Agreements", "/console/agreements")]
    ]
    for n, (want_tag, want_text, want_href) in enumerate(expected, 1):
        ActionChains(b.driver).send_keys(Keys.TAB).perform()
        e = active()
        text = (e.get_attribute("textContent") or "").strip()
        href = e.get_attribute("href") or ""
        if e.tag_name.lower() != want_tag or text != want_text or not href.endswith(want_href):
            raise CheckFailed(f"Tab #{n} from the top to focus the link '{want_text}' ({want_href}); "
                              f"it focused <{e.tag_name}> '{text}' {href}")
        if n == 1:
            # The skip link is off-screen until focused: focused, it must be visible.
            left = b.driver.execute_script("return document.activeElement.getBoundingClientRect().left")
            if left < 0:
                raise CheckFailed(f"the focused skip link to be on screen; it is at x={left}")
    if b.driver.find_element(By.CSS_SELECTOR, "header nav a[href='/console']").get_attribute("aria-current") != "page":
        raise CheckFailed("the Overview link to carry aria-current=page on the overview")
    b.get("/console")
    ActionChains(b.driver).send_keys(Keys.TAB).perform()
    ActionChains(b.driver).send_keys(Keys.ENTER).perform()
    b.wait("Enter on the skip link to move the focus to <main id=main>",
           lambda d: d.switch_to.active_element.get_attribute("id") == "main")
    log("ok  keyboard: Tab reaches the skip link, then Overview, Datasets, Agreements; the skip link focuses main")


def minimal_policy_edit(document):
    """The registry-rw share's `write: [status]` becomes `write: []`; (new document, start, end)
    where start:end is the text to delete (the word 'status' on that line)."""
    lines = document.split("\n")
    start = None
    for i, line in enumerate(lines):
        if re.match(r"^\s*-\s*id:\s*registry-rw\s*(#.*)?$", line):
            start = i
            break
    if start is None:
        raise CheckFailed("the policy document to have a share '- id: registry-rw'; it reads:\n" + document)
    for i in range(start + 1, len(lines)):
        if re.match(r"^\s*-\s*id:", lines[i]):
            break
        m = re.match(r"^(\s*write:\s*\[)(status)(\].*)$", lines[i])
        if m:
            offset = sum(len(l) + 1 for l in lines[:i]) + len(m.group(1))
            new = document[:offset] + document[offset + len("status"):]
            return new, offset, offset + len("status")
    raise CheckFailed("the registry-rw share to have a line 'write: [status]'; the document reads:\n" + document)


def admin_part(b, token, citymesh, fed):
    login(b, token, "admin")
    check_keyboard(b)

    b.get("/console")
    b.element("figure.graph svg", "the federation graph on the overview")
    b.shoot("overview.png")
    b.get("/console/datasets/hangzhou/registry")
    rows = b.driver.find_elements(By.CSS_SELECTOR, "#records tbody tr th a")
    if not rows:
        raise CheckFailed("records listed in #records on /console/datasets/hangzhou/registry")
    b.shoot("dataset.png")
    b.get("/console/agreements")
    if not b.exists("section.card"):
        raise CheckFailed("the demo's agreements as cards on /console/agreements")
    b.shoot("agreements.png")

    # The policy: explain, edit, check, apply.
    b.get("/console/policy?city=suzhou&dataset=registry")
    b.element("#explain-now", "the explain table #explain-now for suzhou and registry")
    expect_access(b, "explain-now", "status", "read-write")
    summary = b.text("main p.summary")
    m = re.search(r"Version (\d+) is in force", summary)
    if not m:
        raise CheckFailed(f"the policy page to say 'Version N is in force'; it says '{summary}'")
    version = int(m.group(1))

    textarea = b.element("textarea#document", "the policy editor textarea#document")
    document = textarea.get_property("value")
    draft, start, end = minimal_policy_edit(document)
    # The edit as a person makes it: select 'status' inside `write: [status]` and delete it.
    b.driver.execute_script(
        "const t = arguments[0]; t.focus(); t.setSelectionRange(arguments[1], arguments[2]);", textarea, start, end)
    ActionChains(b.driver).send_keys(Keys.BACKSPACE).perform()
    typed = textarea.get_property("value")
    if typed != draft:
        raise CheckFailed("the textarea to hold the document with 'write: []' after the edit; it holds:\n" + typed)

    b.submit_by(b.driver.find_element(By.ID, "check-button"), "'Check, diff and explain' to load the check's result")
    if b.exists("#check-bad"):
        listing = "\n".join(e.text for e in b.driver.find_elements(By.CSS_SELECTOR, "ol.listing li.bad"))
        raise CheckFailed(f"#check-ok (the draft is valid); the page shows #check-bad:\n{listing}")
    b.element("#check-ok", "#check-ok: the draft is valid")
    removed = [e.text for e in b.driver.find_elements(By.CSS_SELECTOR, "#diff span.del")]
    added = [e.text for e in b.driver.find_elements(By.CSS_SELECTOR, "#diff span.add")]
    if len(removed) != 1 or len(added) != 1 or "write: [status]" not in removed[0] or "write: []" not in added[0]:
        hint = ""
        if any("\n" in line for line in added):
            hint = ("\n(the whole draft came back as one line: a browser sends a textarea's line breaks as CR LF, "
                    "and the server did not split the draft on them)")
        raise CheckFailed("#diff to show one removed line with 'write: [status]' and one added line with 'write: []'; "
                          f"it shows {len(removed)} removed lines {removed[:3]}… and {len(added)} added lines {added[:3]}…{hint}")
    changes = [e.text for e in b.driver.find_elements(By.CSS_SELECTOR, "#changes li")]
    if not changes:
        raise CheckFailed("#changes to list what the draft changes; it is empty")
    b.element("#explain-draft", "#explain-draft: explain under the draft")
    expect_access(b, "explain-draft", "status", "read")
    expect_access(b, "explain-now", "status", "read-write")
    log(f"ok  check: valid; diff -{removed[0].strip()!r} +{added[0].strip()!r}; changes {changes}; status read under the draft")
    b.shoot("policy-check.png", scroll_to="#check", fit="#check")

    textarea = b.element("textarea#document", "the editor still on the page after the check")
    if textarea.get_property("value") != draft:
        raise CheckFailed("the textarea to still hold the draft after the check; it holds:\n" + textarea.get_property("value"))
    b.submit_by(b.driver.find_element(By.ID, "apply-button"), "Apply to load the next page")
    if b.exists("#apply-error"):
        raise CheckFailed(f"the draft to be applied; the page says: {b.text('#apply-error')}")
    flash = b.element("p.flash", "a flash message p.flash after Apply").text
    if f"Policy version {version + 1} is in force" not in flash:
        raise CheckFailed(f"the flash to say 'Policy version {version + 1} is in force'; it says '{flash}'")
    b.element("#explain-now", "#explain-now after Apply (the page keeps city=suzhou, dataset=registry)")
    expect_access(b, "explain-now", "status", "read")
    if f"Version {version + 1} is in force" not in b.text("main p.summary"):
        raise CheckFailed(f"the policy page to say 'Version {version + 1} is in force'; it says '{b.text('main p.summary')}'")
    # What the node stored is what the editor showed: not, say, the browser's CR LF line breaks.
    shown = json.loads(run(citymesh, "policy", "show", "--dir", os.path.join(fed, "hangzhou"), "--json"))
    stored = (shown.get("current") or {})
    if stored.get("version") != version + 1 or stored.get("document") != draft:
        document = stored.get("document") or ""
        why = " (it has CR LF line breaks, as the browser submitted the textarea)" if "\r\n" in document else ""
        raise CheckFailed(f"'citymesh policy show' to give version {version + 1} with exactly the text of the draft; "
                          f"it gives version {stored.get('version')} with a different text{why}:\n{document!r}")
    log(f"ok  applied: '{flash}'; explain now shows status read; the node stored the draft as typed")

    b.submit_by(b.driver.find_element(By.CSS_SELECTOR, "header form[action='/console/logout'] button"), "Log out to load the next page")
    b.wait("the login page with 'You are logged out.' after Log out",
           lambda d: b.path().startswith("/console/login") and "You are logged out." in b.text("main"))
    b.get("/console/policy")
    b.wait("the console to send a logged-out browser to the login page", lambda d: b.path().startswith("/console/login"))
    log("ok  logged out; the console asks for a token again")
    return version + 1


def auditor_part(b, token, version, citymesh, fed, workdir):
    login(b, token, "auditor")
    if "(read-only)" not in b.text("header .who"):
        raise CheckFailed(f"the header to say '(read-only)' for an auditor; it says '{b.text('header .who')}'")

    b.get("/console/policy")
    pre = b.element("pre#document", "the policy in force as <pre id=document> for an auditor")
    for css in ["#apply-button", "#check-button", "textarea"]:
        if b.exists(css):
            raise CheckFailed(f"no {css} on /console/policy for an auditor; there is one")
    if "write: []" not in pre.text:
        raise CheckFailed("the policy shown to the auditor to be the applied one (with 'write: []'); it reads:\n" + pre.text)
    log("ok  auditor: the policy is read-only (no editor, no Apply)")

    b.get("/console/ledger")
    if not b.driver.find_elements(By.CSS_SELECTOR, "#ledger tbody tr th a"):
        raise CheckFailed("ledger entries in table #ledger")
    b.shoot("ledger.png")
    Select(b.element("select#kind", "the ledger filter's kind select #kind")).select_by_visible_text("policy.applied")
    b.submit_by(b.driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]"), "the ledger filter to load")
    b.wait("the filtered ledger's URL to carry kind=policy.applied", lambda d: "kind=policy.applied" in d.current_url)
    rows = b.driver.find_elements(By.CSS_SELECTOR, "#ledger tbody tr")
    kinds = [r.find_element(By.CSS_SELECTOR, "td:nth-of-type(2)").text for r in rows if r.find_elements(By.CSS_SELECTOR, "td:nth-of-type(2)")]
    if not kinds or any(k != "policy.applied" for k in kinds):
        raise CheckFailed(f"only policy.applied entries in the filtered ledger; the Kind column shows {kinds}")
    link = rows[0].find_element(By.CSS_SELECTOR, "th a")
    index = link.text.strip()
    b.submit_by(link, f"ledger entry {index} to open")
    b.wait(f"the entry page /console/ledger/{index}", lambda d: b.path() == f"/console/ledger/{index}")

    # The proof: console.js verifies it; a fresh entry may need the next signed checkpoint first.
    deadline = time.monotonic() + CHECKPOINT_TIMEOUT
    while not b.exists("#proof-badge"):
        if "not in a signed checkpoint yet" not in b.text("main"):
            raise CheckFailed("#proof-badge on the entry page, or the note that the entry is not in a signed checkpoint yet")
        if time.monotonic() > deadline:
            raise CheckFailed(f"entry {index} to reach a signed checkpoint (reloading every 2 s for {CHECKPOINT_TIMEOUT} s)")
        time.sleep(2)
        b.driver.refresh()
        b.loaded()
    result = b.wait("console.js to set #proof-badge's data-result (verified or failed)",
                    lambda d: d.find_element(By.ID, "proof-badge").get_attribute("data-result"))
    badge = b.text("#proof-badge")
    if result != "verified":
        vkey = b.text("#vkey") if b.exists("#vkey") else "(no #vkey on the page)"
        raise CheckFailed(f"#proof-badge data-result='verified'; it is '{result}': {badge}\nthe node's verifier key: {vkey}")
    text = b.text("#entry-json")
    try:
        entry = json.loads(text)
    except ValueError:
        raise CheckFailed("#entry-json to hold the entry as JSON; it holds:\n" + text)
    if entry.get("kind") != "policy.applied" or (entry.get("counts") or {}).get("version") != version:
        raise CheckFailed(f"#entry-json to be a policy.applied entry with counts.version {version}; it is:\n{text}")
    log(f"ok  ledger entry {index}: policy.applied, version {version}; {badge}")
    b.shoot("ledger-entry.png")
    check_verifier_refuses(b)

    b.get("/console/activity?days=1")
    if not b.driver.find_elements(By.CSS_SELECTOR, "figure.chart-box svg"):
        raise CheckFailed("exchange charts (figure.chart-box svg) on /console/activity?days=1: the demo exchanged records")
    b.shoot("activity.png")
    log("ok  activity charts")

    bundles = []
    for city in ["hangzhou", "suzhou"]:
        out = os.path.join(workdir, f"{city[:2]}.bundle")
        run(citymesh, "audit", "export", "--dir", os.path.join(fed, city), "--out", out)
        bundles.append(out)
    b.get("/console/reconcile")
    for field, target, file in [("file-a", "bundle-a", bundles[0]), ("file-b", "bundle-b", bundles[1])]:
        b.element(f"#{field}", f"the file input #{field}").send_keys(file)
        with open(file, encoding="utf-8") as f:
            content = f.read()
        b.wait(f"#{target} to be filled with {os.path.basename(file)} by the page's script after choosing it in #{field}",
               lambda d: d.execute_script("return document.getElementById(arguments[0]).value", target).strip() == content.strip())
    b.submit_by(b.driver.find_element(By.CSS_SELECTOR, "#reconcile-form button[type=submit]"), "the reconcile form to be submitted")
    result = b.element("#reconcile-result", "#reconcile-result after submitting two bundles").text
    if not result.startswith("Clean"):
        raise CheckFailed(f"#reconcile-result to say 'Clean'; it says '{result}'")
    log(f"ok  reconcile: {result}")
    b.shoot("reconcile.png", scroll_to="#result-h")


VERIFY = """
const done = arguments[arguments.length - 1];
CityMeshConsole.verifyProof(arguments[0]).then(() => done("verified"), (e) => done("refused: " + e.message));
"""


def check_verifier_refuses(b):
    """The same in-browser check, on altered copies of the page's proof data, must refuse each."""
    data = json.loads(b.driver.execute_script("return document.getElementById('proof-data').textContent"))
    # One digit of the entry's time changed: still a well-formed entry, no longer the one in the log.
    entry = bytearray(base64.b64decode(data["entryBytes"]))
    at = entry.find(b'"time":"') + len(b'"time":"')
    if at < len(b'"time":"'):
        raise CheckFailed("the entry's bytes to hold a time")
    entry[at + 3] = ord("8") if entry[at + 3] != ord("8") else ord("9")
    checkpoint_lines = data["checkpoint"].split("\n")
    other_root = base64.b64encode(hashlib.sha256(b"another tree").digest()).decode()
    sig_line = next(i for i, l in enumerate(checkpoint_lines) if l.startswith("\u2014 "))
    name, sig = checkpoint_lines[sig_line][2:].split(" ")
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 0x01
    forged_sig = checkpoint_lines[:sig_line] + [f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}"] + checkpoint_lines[sig_line + 1:]
    altered = {
        "an entry with one digit of its time changed": dict(data, entryBytes=base64.b64encode(bytes(entry)).decode()),
        "a checkpoint naming another root": dict(data, checkpoint="\n".join(checkpoint_lines[:2] + [other_root] + checkpoint_lines[3:])),
        "a checkpoint signature with one bit changed": dict(data, checkpoint="\n".join(forged_sig)),
        "a proof missing a hash": dict(data, proof=data["proof"][:-1]) if data["proof"] else None,
        "the entry claimed at another index": dict(data, index=data["index"] + 1),
    }
    b.driver.set_script_timeout(30)
    for what, d in altered.items():
        if d is None:
            continue
        outcome = b.driver.execute_async_script(VERIFY, d)
        if not outcome.startswith("refused"):
            raise CheckFailed(f"the in-browser check to refuse {what}; it said '{outcome}'")
        log(f"ok  the in-browser check refuses {what}: {outcome[9:]}")
    # A verifier key whose base64 holds "+" (about half of all keys do) must still parse.
    name = "example.citymesh/ledger"
    key = bytes([0x01]) + bytes([0xfb]) * 32
    key_hash = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex()
    vkey = f"{name}+{key_hash}+{base64.b64encode(key).decode()}"
    if "+" not in base64.b64encode(key).decode():
        raise CheckFailed("the test key's base64 to contain '+'")
    parsed = b.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "CityMeshConsole.parseVKey(arguments[0]).then((k) => done(k.name + ' ' + k.id), (e) => done('refused: ' + e.message));", vkey)
    if parsed != f"{name} {key_hash}":
        raise CheckFailed(f"the in-browser key parser to read {vkey}; it said '{parsed}'")
    log("ok  a verifier key with '+' in its base64 parses")
    check_p256_checkpoint(b)


def check_p256_checkpoint(b):
    """A P-256 node's checkpoint (signed-note type 0x02), made here with the openssl CLI: the
    in-browser check verifies it, and refuses it with one bit of the signature changed."""
    name = "p256.citymesh/ledger"
    with tempfile.TemporaryDirectory() as tmp:
        def ossl(*args):
            subprocess.run(["/usr/bin/openssl", *args], cwd=tmp, check=True, capture_output=True)
        ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "k.pem")
        ossl("pkey", "-in", "k.pem", "-pubout", "-outform", "DER", "-out", "spki.der")
        entry = b'{"index":0,"kind":"test.entry"}'
        root = hashlib.sha256(b"\x00" + entry).digest()
        text = f"{name}\n1\n{base64.b64encode(root).decode()}\n"
        with open(os.path.join(tmp, "text"), "w", encoding="utf-8") as f:
            f.write(text)
        ossl("dgst", "-sha256", "-sign", "k.pem", "-out", "sig.der", "text")
        with open(os.path.join(tmp, "spki.der"), "rb") as f:
            spki = f.read()
        with open(os.path.join(tmp, "sig.der"), "rb") as f:
            sig = f.read()
    key_id = hashlib.sha256(spki).digest()[:4]
    vkey = f"{name}+{key_id.hex()}+{base64.b64encode(bytes([0x02]) + spki).decode()}"
    def data(signature):
        return {"vkey": vkey, "entryBytes": base64.b64encode(entry).decode(), "index": 0, "treeSize": 1, "proof": [],
                "checkpoint": text + "\n" + f"\u2014 {name} {base64.b64encode(key_id + signature).decode()}\n"}
    outcome = b.driver.execute_async_script(VERIFY, data(sig))
    if outcome != "verified":
        raise CheckFailed(f"the in-browser check to verify a P-256 checkpoint signed by openssl; it said '{outcome}'")
    log("ok  the in-browser check verifies a P-256 (signed-note 0x02) checkpoint signed by openssl")
    forged = bytearray(sig)
    forged[-1] ^= 0x01
    outcome = b.driver.execute_async_script(VERIFY, data(bytes(forged)))
    if not outcome.startswith("refused"):
        raise CheckFailed(f"the in-browser check to refuse a P-256 checkpoint with one bit changed; it said '{outcome}'")
    log(f"ok  the in-browser check refuses a P-256 checkpoint with one bit changed: {outcome[9:]}")


# MARK: Main

def excerpt(b):
    try:
        text = b.driver.find_element(By.TAG_NAME, "body").text
    except Exception as e:  # the browser itself may be gone
        return f"(no page text: {e})"
    text = re.sub(r"\n{3,}", "\n\n", text.strip())
    return text if len(text) <= 1500 else text[:1500] + "\n[…]"


def main():
    parser = argparse.ArgumentParser(description="The CityMesh web console in headless Chromium.")
    parser.add_argument("--citymesh", required=True, help="the citymesh binary to test")
    parser.add_argument("--screenshots", metavar="DIR", help="save the docs' PNG screenshots in DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (federation, bundles, logs)")
    args = parser.parse_args()

    citymesh = os.path.abspath(args.citymesh)
    if not (os.path.isfile(citymesh) and os.access(citymesh, os.X_OK)):
        sys.exit(f"console_test.py: no executable citymesh at {citymesh}")
    for path, package in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")]:
        if not os.access(path, os.X_OK):
            sys.exit(f"console_test.py: {path} is missing: install the Debian package {package}")
    screenshots = os.path.abspath(args.screenshots) if args.screenshots else None
    if screenshots:
        os.makedirs(screenshots, exist_ok=True)

    workdir = tempfile.mkdtemp(prefix="citymesh-browser-")
    fed = os.path.join(workdir, "fed")
    demo = Demo(citymesh, fed)
    browser = None
    failure = None
    try:
        log(f"..  starting citymesh demo --dir {fed}")
        demo.start()
        demo.wait_ready()
        url = demo.admin_url("hangzhou")
        with open(os.path.join(fed, "hangzhou", "admin.token"), encoding="utf-8") as f:
            admin_token = f.read().strip()
        created = json.loads(run(citymesh, "token", "create", "--dir", os.path.join(fed, "hangzhou"),
                                 "--role", "auditor", "--name", "browser-auditor", "--json"))
        auditor_token = created.get("token")
        if not auditor_token:
            raise CheckFailed(f"'citymesh token create --json' to print the new token in field 'token'; it printed {created}")
        log(f"ok  demo up; hangzhou's admin API at {url}; auditor token {created.get('id')}")

        browser = Browser(workdir, screenshots)
        browser.base = url
        version = admin_part(browser, admin_token, citymesh, fed)
        auditor_part(browser, auditor_token, version, citymesh, fed, workdir)

        severe = [(u, e) for u, e in browser.console if e.get("level") == "SEVERE"]
        if severe:
            raise CheckFailed("no SEVERE messages in the browser's console; there are:\n" +
                              "\n".join(f"  {u}: {e.get('message')}" for u, e in severe))
        for u, e in browser.console:
            log(f"    browser console {e.get('level')} {u}: {e.get('message')}")
        log(f"ok  no errors in the browser's console ({len(browser.console)} messages)")
    except Exception as e:
        failure = e
        print("\nFAILED", file=sys.stderr)
        if isinstance(e, CheckFailed):
            print(f"expected: {e}", file=sys.stderr)
        else:
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc()
        if browser:
            print(f"current URL: {browser.driver.current_url}", file=sys.stderr)
            print(f"page text:\n{excerpt(browser)}", file=sys.stderr)
            for u, entry in browser.console:
                if entry.get("level") in ("SEVERE", "WARNING"):
                    print(f"browser console: {entry.get('level')} {u}: {entry.get('message')}", file=sys.stderr)
        print(f"demo output (tail):\n{demo.tail()}", file=sys.stderr)
    finally:
        if browser:
            try:
                browser.quit()
            except Exception as e:
                log(f"!! closing the browser: {e}")
        log("..  stopping the demo (SIGINT, as Ctrl-C)")
        status = demo.stop()
        log(f"..  demo stopped (exit status {status})")
        if failure is None and status != 0:
            failure = CheckFailed(f"the demo to exit 0 after SIGINT; it exited {status}")
            print(f"\nFAILED\nexpected: {failure}\ndemo output (tail):\n{demo.tail()}", file=sys.stderr)

    elapsed = time.monotonic() - STARTED
    if failure:
        print(f"\nconsole_test: FAILED after {elapsed:.0f} s; the federation and logs are kept in {workdir}", file=sys.stderr)
        return 1
    if args.keep:
        log(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nconsole_test: every check passed in {elapsed:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
