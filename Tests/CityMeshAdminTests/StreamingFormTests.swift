import Foundation
import Testing
@testable import CityMeshAdmin

/// The console's uploads are decoded as they arrive (`StreamingForm`): whatever the chunking —
/// an escape cut between two chunks, one byte at a time — the spooled values are the
/// URL-decoded bytes, and small fields stay small.
@Suite("Streaming forms")
struct StreamingFormTests {
    static func encode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed)!
    }

    static let bundle = "{\"format\": \"citymesh-audit-bundle/1\",\r\n \"note\": \"a+b=c & 100% — 杭州\"}\n"
    static let body = "_csrf=tok%2Fen&a=\(encode(bundle))&b=second+bundle&empty=&flag"

    func run(_ chunks: [ArraySlice<UInt8>]) throws -> (spooled: [String: [UInt8]], small: [String: String], seen: [String]) {
        var form = StreamingForm(spooled: ["a", "b"])
        var spooled: [String: [UInt8]] = [:]
        for chunk in chunks {
            for case .bytes(let f, let b) in try form.feed(chunk) { spooled[f, default: []] += b }
        }
        for case .bytes(let f, let b) in try form.finish() { spooled[f, default: []] += b }
        return (spooled, form.small, form.seen)
    }

    @Test("every split of the body into two chunks, and one byte at a time, decodes the same")
    func splits() throws {
        let bytes = Array(Self.body.utf8)
        var results: [(spooled: [String: [UInt8]], small: [String: String], seen: [String])] = []
        for cut in 0...bytes.count { results.append(try run([bytes[..<cut], bytes[cut...]])) }
        results.append(try run(bytes.indices.map { bytes[$0...$0] }))
        for r in results {
            #expect(r.spooled["a"] == Array(Self.bundle.utf8), "CR LF, '+', '&', '%' and UTF-8 inside a spooled value come out as sent")
            #expect(r.spooled["b"] == Array("second bundle".utf8))
            #expect(r.small == ["_csrf": "tok/en", "empty": "", "flag": ""])
            #expect(r.seen == ["a", "b"])
        }
    }

    @Test("malformed escapes stay as they were; a small field over its limit and an endless key are refused; a spooled field twice is seen twice")
    func hostile() throws {
        let r = try run([ArraySlice(Array("x=%zz%4&a=%".utf8))])
        #expect(r.small["x"] == "%zz%4")
        #expect(r.spooled["a"] == Array("%".utf8))
        var form = StreamingForm(spooled: ["a"], smallLimit: 16)
        #expect(throws: StreamingForm.TooLarge.self) { _ = try form.feed(Array("note=\(String(repeating: "x", count: 17))".utf8)) }
        var keys = StreamingForm(spooled: [])
        #expect(throws: StreamingForm.TooLarge.self) { _ = try keys.feed(Array(String(repeating: "k", count: 300).utf8)) }
        let twice = try run([ArraySlice(Array("a=1&a=2".utf8))])
        #expect(twice.seen == ["a", "a"], "the console refuses this (readUpload)")
        // A spooled value is not capped by the small limit: 1 MiB goes through in pieces.
        var big = StreamingForm(spooled: ["a"], smallLimit: 16)
        var total = 0
        for case .bytes(_, let b) in try big.feed(Array(("a=" + String(repeating: "%41", count: 1 << 20)).utf8)) { total += b.count }
        for case .bytes(_, let b) in try big.finish() { total += b.count }
        #expect(total == 1 << 20)
    }
}
