import Mustache

/// The console's Mustache templates, compiled into the binary (a city's network is often
/// offline, and the node is one file). `{{x}}` is HTML-escaped; `{{{x}}}` is only used for
/// markup the console drew itself (SVG, the page body inside the layout).
struct ConsoleViews: Sendable {
    let library: MustacheLibrary

    init() {
        var library = MustacheLibrary()
        for (name, text) in Self.templates {
            // The templates are constants of this file: a parse error is a bug caught by the route tests.
            do { try library.register(text, named: name) } catch { preconditionFailure("console template \(name): \(error)") }
        }
        self.library = library
    }

    func render(_ name: String, _ data: [String: Any]) -> String {
        library.render(data, withTemplate: name) ?? "<p>missing template \(name)</p>"
    }

    static let templates: [String: String] = [
        // The start of every page, up to the end of <head>'s shared part.
        "head": #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · CityMesh {{city}}</title>
        <link rel="icon" href="data:,">
        <link rel="stylesheet" href="/console/assets/console.css">
        """#,

        "layout": #"""
        {{> head}}
        <script src="/console/assets/console.js" defer></script>
        </head>
        <body>
        <a class="skip" href="#main">Skip to content</a>
        <header>
        <nav aria-label="Console">
        <span class="brand">CityMesh · <strong>{{city}}</strong></span>
        <ul>{{#nav}}<li><a href="{{href}}"{{#current}} aria-current="page"{{/current}}>{{label}}</a></li>{{/nav}}</ul>
        <span class="who">token {{tokenID}} · <span class="role role-{{role}}">{{role}}</span>{{#readOnly}} (read-only){{/readOnly}}
        <form method="post" action="/console/logout" class="inline"><input type="hidden" name="_csrf" value="{{csrf}}"><button type="submit">Log out</button></form></span>
        </nav>
        </header>
        <main id="main" tabindex="-1">
        {{#flash}}<p class="flash" role="status">{{flash}}</p>{{/flash}}
        <h1>{{title}}</h1>
        {{{content}}}
        </main>
        </body>
        </html>
        """#,

        "login": #"""
        {{> head}}
        </head>
        <body class="login">
        <main id="main">
        <h1>CityMesh · {{city}}</h1>
        <p>Log in with an admin API token. Admins and operators can change things; auditors see everything, read-only.</p>
        {{#notice}}<p class="flash" role="status">{{notice}}</p>{{/notice}}
        {{#error}}<p class="error" role="alert" id="login-error">{{error}}</p>{{/error}}
        <form method="post" action="/console/login">
        <label for="token">Token</label>
        <input type="password" id="token" name="token" autocomplete="off" required autofocus placeholder="cm_…" aria-describedby="token-help">
        <p id="token-help" class="help">The node directory's <code>admin.token</code> is an admin token; <code>citymesh token create --role auditor</code> makes an auditor's. The token stays on the node: your browser gets a session cookie.</p>
        {{#next}}<input type="hidden" name="next" value="{{next}}">{{/next}}
        <button type="submit">Log in</button>
        </form>
        </main>
        </body>
        </html>
        """#,

        "error": #"""
        <p class="error" role="alert"><strong>{{status}} {{code}}</strong>: {{message}}</p>
        <p><a href="javascript:history.back()">Back</a> · <a href="/console">Overview</a></p>
        """#,

        "overview": #"""
        <p class="summary">CityMesh {{version}}, running since {{startedAt}} · {{datasetCount}} datasets · {{connected}} of {{peerCount}} peers connected · peer address {{listen}}</p>
        {{#noTransport}}<p class="muted">This node runs without a peer transport.</p>{{/noTransport}}
        <figure class="graph">{{{graph}}}
        <figcaption>Solid green lines are live mutual-TLS connections; dashed lines are cities known but not connected. → shares this city offers, ← shares it receives; r read-only, rw with write rights.</figcaption></figure>
        <h2 id="peers">Peers</h2>
        <table aria-labelledby="peers">
        <thead><tr><th scope="col">City</th><th scope="col">State</th><th scope="col">Direction</th><th scope="col">Address</th><th scope="col">RTT</th><th scope="col">Last seen</th><th scope="col">Certificate expires</th><th scope="col">Software</th></tr></thead>
        <tbody>
        {{#peers}}<tr><th scope="row">{{city}}</th><td><span class="badge {{stateClass}}">{{state}}</span>{{#lastError}}<br><small>{{lastError}}</small>{{/lastError}}</td><td>{{direction}}</td><td>{{address}}</td><td>{{rtt}}</td><td>{{lastSeen}}</td><td>{{expires}} {{#expiresIn}}<span class="badge {{#expiresSoon}}bad{{/expiresSoon}}{{^expiresSoon}}ok{{/expiresSoon}}">{{expiresIn}}</span>{{/expiresIn}}</td><td>{{software}}</td></tr>{{/peers}}
        {{^peers}}<tr><td colspan="8" class="muted">No peers yet: add seeds to the config (docs/operations.md).</td></tr>{{/peers}}
        </tbody>
        </table>
        <h2 id="sync">Shares and sync state</h2>
        <table aria-labelledby="sync">
        <thead><tr><th scope="col">Share</th><th scope="col">Dataset</th><th scope="col">Role here</th><th scope="col">With</th><th scope="col">State</th><th scope="col">Batches held</th><th scope="col">Missing here</th><th scope="col">Missing there</th><th scope="col">Last exchange</th></tr></thead>
        <tbody>
        {{#shares}}<tr><th scope="row">{{share}}</th><td>{{dataset}}</td><td>{{role}}</td><td>{{city}}</td><td><span class="badge {{stateClass}}">{{state}}</span>{{#behindSince}} since {{behindSince}}{{/behindSince}}</td><td>{{held}}</td><td>{{missingHere}}</td><td>{{missingThere}}</td><td>{{lastExchange}}</td></tr>{{/shares}}
        {{^shares}}<tr><td colspan="9" class="muted">No active shares.</td></tr>{{/shares}}
        </tbody>
        </table>
        {{#hasRefusals}}<h2 id="refusals">Recent handshake refusals</h2>
        <table aria-labelledby="refusals"><thead><tr><th scope="col">At</th><th scope="col">Reason</th><th scope="col">Remote</th><th scope="col">Direction</th><th scope="col">Detail</th></tr></thead><tbody>
        {{#refusals}}<tr><td>{{at}}</td><td>{{reason}}</td><td>{{remote}}</td><td>{{direction}}</td><td>{{detail}}</td></tr>{{/refusals}}
        </tbody></table>{{/hasRefusals}}
        """#,

        "datasets": #"""
        <table>
        <caption>Datasets on this node: its own, and replicas of other cities' shared with it</caption>
        <thead><tr><th scope="col">Dataset</th><th scope="col">Origin</th><th scope="col">Key</th><th scope="col">Fields</th><th scope="col">Records</th><th scope="col">Last seq</th><th scope="col">Created</th></tr></thead>
        <tbody>
        {{#datasets}}<tr><th scope="row"><a href="{{href}}">{{id}}</a></th><td>{{origin}}</td><td>{{key}}</td><td>{{fields}}</td><td>{{records}}</td><td>{{lastSeq}}</td><td>{{createdAt}}</td></tr>{{/datasets}}
        {{#none}}<tr><td colspan="7" class="muted">No datasets yet: 'citymesh dataset create' makes one.</td></tr>{{/none}}
        </tbody>
        </table>
        """#,

        "dataset": #"""
        <p class="summary">{{records}} records · last seq {{lastSeq}} · created {{createdAt}}{{#replicaOf}} · a replica of {{replicaOf}}'s dataset: only the fields and rows its share allows reach this node{{/replicaOf}}</p>
        <details><summary>Schema ({{keyColumn}} is the key)</summary>
        <table><thead><tr><th scope="col">Field</th><th scope="col">Type</th></tr></thead><tbody>
        {{#fields}}<tr><th scope="row">{{name}}{{#isKey}} (key){{/isKey}}</th><td>{{type}}</td></tr>{{/fields}}
        </tbody></table></details>
        {{#hasShares}}<details open><summary>Shared under these agreements (<a href="/console/agreements">all agreements</a>)</summary>
        <table><thead><tr><th scope="col">Share</th><th scope="col">Member</th><th scope="col">State</th><th scope="col">Access</th><th scope="col">Fields</th><th scope="col">Rows</th></tr></thead><tbody>
        {{#shares}}<tr><th scope="row">{{share}}</th><td>{{member}}</td><td><span class="badge {{stateClass}}">{{state}}</span></td><td>{{access}}</td><td>{{fields}}</td><td>{{filter}}</td></tr>{{/shares}}
        </tbody></table></details>{{/hasShares}}
        <form method="get" action="{{action}}" class="search" role="search">
        <label for="q">Search keys and values</label>
        <input type="search" id="q" name="q" value="{{q}}">
        <button type="submit">Search</button>
        <a href="{{exportCSV}}">Export CSV</a> · <a href="{{exportJSONL}}">Export JSON lines</a>
        </form>
        {{#searched}}<p class="muted">{{shownCount}} matches in {{searched}} records searched.</p>{{/searched}}
        <div class="scroll">
        <table id="records">
        <thead><tr><th scope="col">{{keyColumn}}</th>{{#columns}}<th scope="col">{{name}}</th>{{/columns}}</tr></thead>
        <tbody>
        {{#rows}}<tr><th scope="row"><a href="{{href}}">{{key}}</a></th>{{#cells}}<td>{{value}}</td>{{/cells}}</tr>{{/rows}}
        {{#empty}}<tr><td class="muted">No records{{#qShown}} match '{{qShown}}'{{/qShown}}.</td></tr>{{/empty}}
        </tbody>
        </table>
        </div>
        <p class="pager">{{#firstHref}}<a href="{{firstHref}}">First page</a> {{/firstHref}}{{#nextHref}}<a href="{{nextHref}}">Next page</a>{{/nextHref}}</p>
        """#,

        "record": #"""
        <p class="summary">In <a href="{{datasetHref}}">{{dataset}}</a> · seq {{seq}}</p>
        <table>
        <thead><tr><th scope="col">Field</th><th scope="col">Type</th><th scope="col">Value</th><th scope="col">Written at (HLC)</th><th scope="col">By</th></tr></thead>
        <tbody>
        {{#rows}}<tr><th scope="row">{{field}}</th><td>{{type}}</td><td>{{value}}</td><td><code>{{hlc}}</code></td><td>{{by}}</td></tr>{{/rows}}
        </tbody>
        </table>
        """#,

        "agreements": #"""
        {{#noTransport}}<p class="muted">This node runs without a peer transport, so it has no agreements.</p>{{/noTransport}}
        <p>Every agreement is signed by the owner (the offer) and by the member (the acceptance). Each row links to its ledger entries.</p>
        {{#agreements}}
        <section class="card" aria-labelledby="ag-{{shortID}}">
        <h2 id="ag-{{shortID}}">{{owner}}/{{share}} → {{member}} <span class="badge {{stateClass}}">{{state}}</span></h2>
        <dl class="grid">
        <dt>Dataset</dt><dd>{{dataset}}</dd>
        <dt>Access</dt><dd>{{access}}; fields {{fields}}; write {{write}}</dd>
        <dt>Row filter</dt><dd>{{filter}}</dd>
        <dt>Purpose</dt><dd>{{purpose}}</dd>
        <dt>Legal basis</dt><dd>{{legalBasis}}</dd>
        <dt>Valid until</dt><dd>{{validUntil}} (on revoke: {{onRevoke}})</dd>
        <dt>Offered</dt><dd>{{offeredAt}}</dd>
        <dt>Answered</dt><dd>{{respondedAt}}</dd>
        {{#revocationReason}}<dt>Revoked because</dt><dd>{{revocationReason}}</dd>{{/revocationReason}}
        <dt>Agreement id</dt><dd><code>{{id}}</code></dd>
        </dl>
        <details><summary>Signatures</summary>
        <p>Owner ({{owner}}):</p><pre class="sig">{{ownerSignature}}</pre>
        <p>Member ({{member}}):</p><pre class="sig">{{memberSignature}}</pre>
        </details>
        <p><a href="{{ledgerHref}}">Ledger entries of this agreement</a></p>
        {{#isAdmin}}
        {{#canRespond}}<form method="post" action="/console/agreements/respond" class="inline"><input type="hidden" name="_csrf" value="{{csrf}}"><input type="hidden" name="owner" value="{{owner}}"><input type="hidden" name="share" value="{{share}}"><button name="decision" value="accept">Accept</button> <button name="decision" value="reject">Reject</button></form>{{/canRespond}}
        {{#canRevoke}}<form method="post" action="/console/agreements/revoke" class="inline"><input type="hidden" name="_csrf" value="{{csrf}}"><input type="hidden" name="share" value="{{share}}"><input type="hidden" name="member" value="{{member}}"><button class="danger">Revoke for {{member}}</button></form>{{/canRevoke}}
        {{/isAdmin}}
        </section>
        {{/agreements}}
        {{#none}}<p class="muted">No agreements yet: a policy's shares become offers when the member city connects.</p>{{/none}}
        """#,

        "conflicts": #"""
        <p>When two cities write the same field at the same moment, the later write (by hybrid logical clock) is kept everywhere and the other is kept here, listed, until someone settles it.</p>
        {{#groups}}
        <section class="card" aria-labelledby="c-{{dataset}}-{{key}}-{{field}}">
        <h2 id="c-{{dataset}}-{{key}}-{{field}}">{{dataset}} · <a href="{{recordHref}}">{{key}}</a> · {{field}}</h2>
        <div class="sides">
        <div class="side kept"><h3>Kept now</h3><p class="value">{{kept}}</p><p class="muted">by {{keptBy}} at <code>{{keptStamp}}</code></p></div>
        {{#overwritten}}<div class="side lost"><h3>Overwritten</h3><p class="value">{{value}}</p><p class="muted">by {{by}} at <code>{{stamp}}</code>, found {{foundAt}}</p></div>{{/overwritten}}
        </div>
        {{#isAdmin}}
        <form method="post" action="/console/conflicts/resolve">
        <fieldset><legend>Settle {{key}}.{{field}}</legend>
        <input type="hidden" name="_csrf" value="{{csrf}}"><input type="hidden" name="dataset" value="{{dataset}}"><input type="hidden" name="key" value="{{key}}"><input type="hidden" name="field" value="{{field}}">
        <label><input type="radio" name="choice" value="keep" checked> Keep “{{kept}}”</label>
        {{#overwritten}}<label><input type="radio" name="choice" value="take:{{id}}"> Take “{{value}}” ({{by}})</label>{{/overwritten}}
        <label><input type="radio" name="choice" value="value"> Set another value:</label> <input type="text" name="value" aria-label="another value (JSON or text)">
        <button type="submit">Resolve</button>
        </fieldset>
        </form>
        {{/isAdmin}}
        </section>
        {{/groups}}
        {{#none}}<p class="muted">No open conflicts.</p>{{/none}}
        """#,

        "policy": #"""
        {{#hasActive}}<p class="summary">Version {{version}} is in force: applied by {{appliedBy}} at {{appliedAt}} · sha256 <code>{{sha256}}</code></p>{{/hasActive}}
        {{^hasActive}}<p class="summary">No policy applied yet: nothing is shared.</p>{{/hasActive}}
        {{#applyError}}<p class="error" role="alert" id="apply-error">{{applyError}}</p>{{/applyError}}
        <section aria-labelledby="explain-h" class="card">
        <h2 id="explain-h">Explain: what does a city get?</h2>
        <form method="get" action="/console/policy" class="row">
        <label for="explain-city">City</label>
        <input id="explain-city" name="city" list="known-cities" value="{{explainCity}}" required>
        <datalist id="known-cities">{{#cities}}<option value="{{name}}">{{/cities}}</datalist>
        <label for="explain-dataset">Dataset</label>
        <select id="explain-dataset" name="dataset">{{#datasets}}<option{{#selected}} selected{{/selected}}>{{name}}</option>{{/datasets}}</select>
        <button type="submit">Explain</button>
        </form>
        {{#explainError}}<p class="error" role="alert">{{explainError}}</p>{{/explainError}}
        {{#explain}}<div id="explain-now">{{> explanation}}</div>{{/explain}}
        </section>
        {{#checked}}
        <section aria-labelledby="check-h" class="card" id="check">
        <h2 id="check-h">Check of your draft</h2>
        {{#ok}}<p class="badge ok" role="status" id="check-ok">The draft is valid.</p>{{/ok}}
        {{^ok}}<p class="error" role="alert" id="check-bad">The draft has problems; they are marked in the listing below. Nothing was applied.</p>
        <ol class="listing">{{#listing}}<li value="{{n}}"{{#bad}} class="bad"{{/bad}}><code>{{text}}</code>{{#issues}}<br><span class="issue">{{message}}</span>{{/issues}}</li>{{/listing}}</ol>{{/ok}}
        {{#hasWarnings}}<h3>Warnings</h3><ul>{{#warnings}}<li>{{text}}</li>{{/warnings}}</ul>{{/hasWarnings}}
        {{#ok}}<h3>What changes when you apply it</h3>
        {{#noChanges}}<p class="muted">Nothing: the draft grants the same as the version in force.</p>{{/noChanges}}
        <ul id="changes">{{#changes}}<li><strong>{{subject}}</strong>{{#changeCity}} [{{changeCity}}]{{/changeCity}}: {{what}}</li>{{/changes}}</ul>{{/ok}}
        <h3>Line diff against the version in force</h3>
        {{#identical}}<p class="muted">Identical.</p>{{/identical}}
        {{^identical}}<pre class="diff" id="diff">{{#diff}}<span class="{{cls}}">{{mark}} {{text}}</span>{{/diff}}</pre>{{/identical}}
        {{#explainDraft}}<h3>Explain under the draft</h3><div id="explain-draft">{{> explanation}}</div>{{/explainDraft}}
        {{#explainDraftError}}<p class="error">{{explainDraftError}}</p>{{/explainDraftError}}
        </section>
        {{/checked}}
        {{#canWrite}}
        <section aria-labelledby="edit-h" class="card">
        <h2 id="edit-h">Edit</h2>
        <form method="post" action="/console/policy/check" id="policy-form">
        <input type="hidden" name="_csrf" value="{{csrf}}">
        <input type="hidden" name="city" value="{{explainCity}}">
        <input type="hidden" name="dataset" value="{{#datasets}}{{#selected}}{{name}}{{/selected}}{{/datasets}}">
        <label for="document">Policy (YAML; docs/policy.md describes it)</label>
        <textarea id="document" name="document" rows="24" spellcheck="false">{{document}}</textarea>
        <p class="buttons"><button type="submit" id="check-button">Check, diff and explain</button>
        {{#isAdmin}}<button type="submit" formaction="/console/policy/apply" id="apply-button" class="primary">Apply</button>{{/isAdmin}}
        {{^isAdmin}}<span class="muted">Applying needs the admin role.</span>{{/isAdmin}}</p>
        </form>
        </section>
        {{/canWrite}}
        {{^canWrite}}
        <section aria-labelledby="doc-h" class="card"><h2 id="doc-h">The policy in force</h2><pre id="document">{{activeDocument}}</pre></section>
        {{/canWrite}}
        {{#signedNote}}<details><summary>The node's signature of this version</summary><pre class="sig">{{signedNote}}</pre></details>{{/signedNote}}
        <h2 id="versions-h">Versions</h2>
        <table aria-labelledby="versions-h"><thead><tr><th scope="col">Version</th><th scope="col">Applied by</th><th scope="col">At</th><th scope="col">sha256</th><th scope="col">Signed</th></tr></thead><tbody>
        {{#versions}}<tr><th scope="row">{{version}}</th><td>{{appliedBy}}</td><td>{{appliedAt}}</td><td><code>{{sha}}…</code></td><td>{{#signed}}yes{{/signed}}{{^signed}}no{{/signed}}</td></tr>{{/versions}}
        </tbody></table>
        """#,

        "explanation": #"""
        <p><strong>{{city}}</strong> and <strong>{{dataset}}</strong>: <span class="badge {{#active}}ok{{/active}}{{^active}}muted{{/active}}">{{activeText}}</span> {{decision}}</p>
        <table class="explain"><thead><tr><th scope="col">Field</th><th scope="col">Type</th><th scope="col">Access</th><th scope="col">Why</th></tr></thead><tbody>
        {{#fields}}<tr class="{{cls}}"><th scope="row">{{field}}</th><td>{{type}}</td><td class="access">{{access}}</td><td>{{rule}}</td></tr>{{/fields}}
        </tbody></table>
        <p class="muted">Share {{share}} · rows {{filter}} · purpose {{purpose}} · valid until {{validUntil}}</p>
        """#,

        "ledger": #"""
        <p class="summary">{{#size}}The latest signed checkpoint covers {{size}} entries{{/size}}{{^size}}No signed checkpoint yet{{/size}} · {{witnessCount}} witness cosignatures · <a href="{{bundleHref}}" download>Export an evidence bundle</a></p>
        <form method="get" action="/console/ledger" class="filters" aria-label="Filter the ledger">
        <label>From (UTC) <input type="datetime-local" name="since" value="{{since}}" step="1"></label>
        <label>Until (UTC) <input type="datetime-local" name="until" value="{{until}}" step="1"></label>
        <label>Peer <select name="peer"><option value="">any</option>{{#peers}}<option{{#selected}} selected{{/selected}}>{{name}}</option>{{/peers}}</select></label>
        <label>Dataset <select name="dataset"><option value="">any</option>{{#datasets}}<option{{#selected}} selected{{/selected}}>{{name}}</option>{{/datasets}}</select></label>
        <label>Agreement <select name="agreement"><option value="">any</option>{{#agreements}}<option value="{{id}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/agreements}}</select></label>
        <label>Kind <select name="kind" id="kind"><option value="">any</option>{{#kinds}}<option{{#selected}} selected{{/selected}}>{{name}}</option>{{/kinds}}</select></label>
        <button type="submit">Filter</button> <a href="/console/ledger">Clear</a>
        </form>
        <table id="ledger">
        <caption>Newest first. Open an entry to check its inclusion proof in your browser.</caption>
        <thead><tr><th scope="col">#</th><th scope="col">Time (UTC)</th><th scope="col">Kind</th><th scope="col">Actor</th><th scope="col">Peer</th><th scope="col">Dataset</th><th scope="col">Summary</th></tr></thead>
        <tbody>
        {{#rows}}<tr><th scope="row"><a href="{{href}}">{{index}}</a>{{#pending}} <span class="badge muted" title="not in a signed checkpoint yet">new</span>{{/pending}}</th><td>{{time}}</td><td>{{kind}}</td><td>{{actor}}</td><td>{{peer}}</td><td>{{dataset}}</td><td>{{summary}}</td></tr>{{/rows}}
        {{#none}}<tr><td colspan="7" class="muted">No entries match.</td></tr>{{/none}}
        </tbody>
        </table>
        <p class="pager">{{#newestHref}}<a href="{{newestHref}}">Newest</a> {{/newestHref}}{{#olderHref}}<a href="{{olderHref}}">Older entries</a>{{/olderHref}}</p>
        """#,

        "entry": #"""
        <p class="pager">{{#prevHref}}<a href="{{prevHref}}">← Entry before</a> · {{/prevHref}}<a href="/console/ledger">Ledger</a> · <a href="{{nextHref}}">Entry after →</a></p>
        {{#unproven}}<p class="badge muted" role="status">{{unproven}}</p>{{/unproven}}
        {{#proofJSON}}
        <p id="proof-badge" class="badge pending" role="status" aria-live="polite">Checking the inclusion proof in your browser…</p>
        <script type="application/json" id="proof-data">{{{proofJSON}}}</script>
        {{/proofJSON}}
        <dl class="grid">
        <dt>Kind</dt><dd>{{kind}}</dd><dt>Time</dt><dd>{{time}}</dd><dt>Actor</dt><dd>{{actor}}</dd><dt>Peer</dt><dd>{{peer}}</dd><dt>Dataset</dt><dd>{{dataset}}</dd>
        </dl>
        <h2>The entry as signed</h2>
        <pre id="entry-json">{{json}}</pre>
        {{#proofJSON}}
        <h2>Its proof</h2>
        <p>Entry {{index}} of a tree of {{treeSize}} entries; root <code>{{rootHash}}</code>. Your browser hashes the entry (RFC 9162 leaf hash), climbs the {{proofCount}} proof hashes to the root, and checks the checkpoint's signature (Ed25519 or ECDSA P-256) with the node's key — with Web Crypto, without asking the node anything more.</p>
        <ol class="hashes">{{#proofHashes}}<li><code>{{hash}}</code></li>{{/proofHashes}}</ol>
        <h3>Signed checkpoint</h3>
        <pre class="sig" id="checkpoint">{{checkpoint}}</pre>
        <h3>The node's verifier key</h3>
        <pre class="sig" id="vkey">{{vkey}}</pre>
        <form class="pin" id="pin-form">
        <label for="pinned">Key you trust for this node (from its operator, out of band; kept in this browser only)</label>
        <input id="pinned" name="pinned" size="80" autocomplete="off">
        <button type="submit">Pin key</button> <button type="button" id="unpin">Forget</button>
        </form>
        {{/proofJSON}}
        """#,

        "activity": #"""
        <p class="summary">Records exchanged, from the signed exchange receipts in the ledger ({{receipts}} receipts{{#truncated}}, the first 10,000 shown{{/truncated}}). Dark: sent; light: received.</p>
        <nav aria-label="Range" class="ranges">{{#ranges}}<a href="/console/activity?days={{days}}"{{#current}} aria-current="true"{{/current}}>{{label}}</a> {{/ranges}}</nav>
        {{#none}}<p class="muted">No exchanges in this range.</p>{{/none}}
        {{#hasShares}}<h2>Per share</h2>{{/hasShares}}
        {{#shares}}<figure class="chart-box">{{{svg}}}<figcaption>Share <strong>{{name}}</strong>: {{sent}} records sent, {{received}} received, {{exchanges}} exchanges.</figcaption></figure>{{/shares}}
        {{#hasPeers}}<h2>Per peer</h2>{{/hasPeers}}
        {{#peers}}<figure class="chart-box">{{{svg}}}<figcaption>Peer <strong>{{name}}</strong>: {{sent}} records sent, {{received}} received, {{exchanges}} exchanges.</figcaption></figure>{{/peers}}
        """#,

        "reconcile": #"""
        <p>Choose two cities' evidence bundles (the Ledger page exports this city's; <code>citymesh audit export</code> makes one anywhere). Both are verified against this node's federation CA, then every exchange receipt between the two cities is looked for in both ledgers.</p>
        {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
        <form method="post" action="/console/reconcile" id="reconcile-form">
        <input type="hidden" name="_csrf" value="{{csrf}}">
        <p><label for="file-a">First bundle</label> <input type="file" id="file-a" data-target="bundle-a" accept=".bundle,.json,application/json"></p>
        <p><label for="file-b">Second bundle</label> <input type="file" id="file-b" data-target="bundle-b" accept=".bundle,.json,application/json"></p>
        <details><summary>Or paste them</summary>
        <label for="bundle-a">First bundle (JSON)</label><textarea id="bundle-a" name="a" rows="4"></textarea>
        <label for="bundle-b">Second bundle (JSON)</label><textarea id="bundle-b" name="b" rows="4"></textarea>
        </details>
        <button type="submit">Reconcile</button>
        </form>
        {{#done}}
        <section class="card" aria-labelledby="result-h">
        <h2 id="result-h">{{a}} and {{b}}</h2>
        {{#clean}}<p class="badge ok" role="status" id="reconcile-result">Clean: {{matched}} exchanges ({{records}} records) are in both ledgers with both signatures.</p>{{/clean}}
        {{^clean}}<p class="error" role="alert" id="reconcile-result">Not clean: {{matched}} exchanges match; the rest are listed below.</p>{{/clean}}
        {{#reports}}<p class="muted">{{city}}: bundle verified, checkpoint of {{size}} entries, {{entries}} entries{{^complete}} (partial export){{/complete}}.{{#warnings}} {{text}}{{/warnings}}</p>{{/reports}}
        <h3>Only in {{a}}'s ledger</h3>
        {{#noneOnlyInA}}<p class="muted">None.</p>{{/noneOnlyInA}}
        <ul>{{#onlyInA}}<li>{{at}} {{share}}: {{sender}} → {{receiver}}, {{records}} records, receipt {{receipt}}…</li>{{/onlyInA}}</ul>
        <h3>Only in {{b}}'s ledger</h3>
        {{#noneOnlyInB}}<p class="muted">None.</p>{{/noneOnlyInB}}
        <ul>{{#onlyInB}}<li>{{at}} {{share}}: {{sender}} → {{receiver}}, {{records}} records, receipt {{receipt}}…</li>{{/onlyInB}}</ul>
        {{#hasInvalid}}<h3>Invalid</h3><ul>{{#invalid}}<li>{{text}}</li>{{/invalid}}</ul>{{/hasInvalid}}
        </section>
        {{/done}}
        """#,
    ]
}
