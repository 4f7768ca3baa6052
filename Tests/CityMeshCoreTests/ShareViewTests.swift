import Testing
@testable import CityMeshCore

/// The owner's send-time rule (`ShareView.outgoing`), row by row of its table: what goes out about
/// a record, and whether the members hold it after.
@Suite("Share views: retraction and hidden deletions")
struct ShareViewTests {
    static let schema = try! Schema(keyField: "station", fields: [("station", .string), ("pm25", .double), ("phone", .string)])
    static let hz = try! CitySlug("hangzhou")
    static func stamp(_ ms: UInt64) -> Stamp { Stamp(hlc: HLC(millis: ms, logical: 0), city: hz) }
    static func record(pm25: Double, at ms: UInt64 = 10) -> RecordState {
        RecordState(cells: [
            Cell(field: 1, value: .string("S-1"), stamp: stamp(ms)), Cell(field: 2, value: .double(pm25), stamp: stamp(ms)),
            Cell(field: 3, value: .string("555"), stamp: stamp(ms)),
        ])
    }
    static let view = ShareView(fields: [1, 2], filter: try! RowFilter("pm25 >= 0", schema: schema), schema: schema)

    @Test("the table: live in the filter, live outside it, deleted — each with and without the members holding it")
    func table() {
        let inside = Self.record(pm25: 12), outside = Self.record(pm25: -1)
        var deleted = inside
        deleted.merge(.deletion(at: Self.stamp(20)))
        let projected = inside.projected(onto: [1, 2])
        let cases: [(String, RecordState, Bool, ShareView.Outgoing, Bool)] = [
            ("live, in the filter, held", inside, true, .send(projected), true),
            ("live, in the filter, not held: the whole state", inside, false, .send(projected), true),
            ("live, outside the filter, held: retracted", outside, true, .retract, false),
            ("live, outside the filter, not held: nothing", outside, false, .skip, false),
            ("deleted, held: the deletion", deleted, true, .send(RecordState(tombstone: Self.stamp(20))), false),
            ("deleted, never held: nothing (its key and time stay hidden)", deleted, false, .skip, false),
        ]
        for (what, state, held, expected, after) in cases {
            let (out, visible) = Self.view.outgoing(current: state, change: state, wasVisible: held)
            #expect(out == expected, "\(what)")
            #expect(visible == after, "\(what)")
        }
        // Never a cell outside the view's fields (the phone).
        if case .send(let s) = Self.view.outgoing(current: inside, change: inside, wasVisible: false).0 { #expect(s.cell(field: 3) == nil) }
    }

    @Test("a held record sends only its change; one coming back into view sends its whole state")
    func changes() {
        let old = Self.record(pm25: 12, at: 10)
        var now = old
        let change = RecordState(cells: [Cell(field: 2, value: .double(14), stamp: Self.stamp(30))])
        now.merge(change)
        #expect(Self.view.outgoing(current: now, change: change, wasVisible: true).0 == .send(change))
        #expect(Self.view.outgoing(current: now, change: change, wasVisible: false).0 == .send(now.projected(onto: [1, 2])))
    }

    @Test("new terms, record unchanged (change: nil): held and in view → only the added fields' cells; now outside → retracted; now inside, not held → whole")
    func termsChanged() {
        let inside = Self.record(pm25: 12), outside = Self.record(pm25: -1)
        let wider = ShareView(fields: [1, 2, 3], filter: try! RowFilter("pm25 >= 0", schema: Self.schema), schema: Self.schema)
        // Field 3 joined the view: a held record gets just that cell.
        let (out, visible) = wider.outgoing(current: inside, change: nil, wasVisible: true, added: [3])
        #expect(out == .send(RecordState(sortedCells: inside.cells.filter { $0.field == 3 }, tombstone: nil)) && visible)
        // Nothing added: nothing goes out for a held record still in view.
        #expect(Self.view.outgoing(current: inside, change: nil, wasVisible: true).0 == .skip)
        #expect(Self.view.outgoing(current: inside, change: nil, wasVisible: true).visible)
        #expect(Self.view.outgoing(current: outside, change: nil, wasVisible: true) == (.retract, false))
        #expect(Self.view.outgoing(current: inside, change: nil, wasVisible: false) == (.send(inside.projected(onto: [1, 2])), true))
        #expect(Self.view.outgoing(current: outside, change: nil, wasVisible: false) == (.skip, false))
    }

    @Test("without a filter every live row goes out; a retraction is a record with no cells and no tombstone")
    func noFilter() {
        let open = ShareView(fields: [1, 2], filter: nil, schema: Self.schema)
        let outside = Self.record(pm25: -1)
        #expect(open.outgoing(current: outside, change: outside, wasVisible: true).0 == .send(outside.projected(onto: [1, 2])))
        #expect(ShareView.isRetraction(.init(key: "S-1", state: ShareView.retraction)))
        #expect(!ShareView.isRetraction(.init(key: "S-1", state: .deletion(at: Self.stamp(5)))))
        #expect(!ShareView.isRetraction(.init(key: "S-1", state: outside)))
    }

    @Test("the owner's cut: changes in order, skips consume the cursor, retractions carry their clock, the holders change only when tracked, a batch stops at its size (one record at least), and changes up to the rescan are re-judged")
    func cut() {
        func change(_ key: String, _ seq: Int64, _ state: RecordState) -> ShareView.Change { .init(key: key, seq: seq, state: state) }
        let inside = Self.record(pm25: 12, at: 10), outside = Self.record(pm25: -1, at: 30)
        let changes = [change("A", 5, inside), change("B", 6, outside), change("C", 7, outside), change("D", 8, inside)]
        // B was held (retracted), C was not (skipped), A and D go.
        let c = Self.view.cut(changes, cursor: 4, visible: ["B"], maxBytes: .max)
        #expect(c.records.map(\.key) == ["A", "B", "D"] && ShareView.isRetraction(c.records[1]))
        #expect(c.retracted == [.init(key: "B", hlc: HLC(millis: 30, logical: 0))])
        #expect(c.shown == ["A", "D"] && c.hidden == ["B"] && c.through == 8 && c.next == 4)
        // Untracked (no filter, no re-judging): everything counts as held, nothing is reported.
        let untracked = Self.view.cut(changes, cursor: 4, visible: nil, maxBytes: .max)
        #expect(untracked.records.map(\.key) == ["A", "B", "C", "D"] && untracked.shown.isEmpty && untracked.hidden.isEmpty)
        // Only skips: nothing to send, and the cursor still moves past them.
        let skipped = Self.view.cut([change("C", 7, outside)], cursor: 6, visible: [], maxBytes: .max)
        #expect(skipped.records.isEmpty && skipped.through == 7 && skipped.next == 1)
        // The size bound: the first record always goes; the rest wait for the next cut.
        let one = Self.view.cut(changes, cursor: 4, visible: ["B"], maxBytes: 1)
        #expect(one.records.map(\.key) == ["A"] && one.through == 5 && one.next == 1)
        let rest = Self.view.cut(Array(changes[one.next...]), cursor: one.through, visible: ["B"], maxBytes: 1)
        #expect(rest.records.map(\.key) == ["B"] && rest.through == 7 && rest.next == 2, "C, skipped, is consumed on the way")
        // Re-judged under new terms (up to the rescan): a held record in view gets only the added fields.
        let rescan = Self.view.cut([change("A", 5, inside)], cursor: 0, rescanUntil: 5, visible: ["A"], added: [2], maxBytes: .max)
        #expect(rescan.records.first?.state.cells.map(\.field) == [2])
        let past = Self.view.cut([change("A", 6, inside)], cursor: 0, rescanUntil: 5, visible: ["A"], added: [2], maxBytes: .max)
        #expect(past.records.first?.state.cells.map(\.field) == [1, 2], "a change after the rescan point goes as it is")
    }
}
