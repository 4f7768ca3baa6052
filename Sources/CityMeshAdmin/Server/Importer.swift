import Foundation
import CityMeshCore
import CityMeshStore
import Hummingbird
import NIOCore
import AsyncAlgorithms
import Crypto

/// The formats `import` and `export` speak.
public enum ImportFormat: String, Sendable, Codable {
    case csv, jsonl

    public init(_ raw: String) throws {
        guard let f = ImportFormat(rawValue: raw) else {
            throw CityMeshError(.invalidArgument, "unknown format '\(raw)': use csv or jsonl")
        }
        self = f
    }
}

/// Streams an import body into the store: parses as bytes arrive, writes in transactions of
/// `batchSize` rows, and rejects bad rows individually (line number and reason) without
/// touching the good ones. Memory is bounded by one batch, whatever the file's size.
struct Importer: Sendable {
    let store: NodeStore
    let dataset: DatasetID
    let schema: Schema
    let format: ImportFormat
    let physicalMillis: @Sendable () -> UInt64
    /// The ledger entry of one committed chunk (its lines and what it wrote), appended in the
    /// chunk's own transaction: a chunk is never committed without its entry, so an import that
    /// stops half-way leaves every change it made in the ledger. Nil: no ledger (route tests).
    var log: (@Sendable (_ lines: ClosedRange<Int>, _ written: WriteSummary) -> LedgerEntry)? = nil
    static let batchSize = 20_000

    /// Rows ready to write, with the lines of the file they came from.
    struct Chunk: Sendable {
        var writes: [PreparedWrite]
        var lines: ClosedRange<Int>
    }
    static let maxListedRejections = 1000
    /// Longest rejection reason listed, in characters.
    static let maxReasonLength = 300

    /// Parses (and stamps and encodes) on one task while the previous batch is written on the
    /// store's writer: two stages joined by a channel that holds one batch, so the parser is never
    /// more than a batch ahead and memory stays bounded whatever the file's size.
    func run<Body: AsyncSequence & Sendable>(_ body: Body) async throws -> API.ImportSummary where Body.Element == ByteBuffer {
        let started = ContinuousClock.now
        let channel = AsyncThrowingChannel<Chunk, any Error>()
        let (parsed, written, writeTime) = try await withThrowingTaskGroup(of: Outcome.self) { group in
            group.addTask {
                do {
                    let summary = try await parse(body) { batch in await channel.send(batch) }
                    channel.finish()
                    return .parsed(summary)
                } catch {
                    channel.fail(error)
                    throw error
                }
            }
            group.addTask {
                var total = WriteSummary()
                var writeTime = Duration.zero
                for try await chunk in channel {
                    let t0 = ContinuousClock.now
                    let lines = chunk.lines
                    let note: NodeStore.LedgerNote? = log.map { log in { @Sendable summary in log(lines, summary) } }
                    let s = try await store.apply(dataset, chunk.writes, log: note)
                    writeTime += ContinuousClock.now - t0
                    total.written += s.written
                    total.unchanged += s.unchanged
                }
                return .written(total, writeTime)
            }
            var parsed = API.ImportSummary()
            var written = WriteSummary()
            var writeTime = Duration.zero
            for try await outcome in group {
                switch outcome {
                case .parsed(let p): parsed = p
                case .written(let w, let t):
                    written = w
                    writeTime = t
                }
            }
            return (parsed, written, writeTime)
        }
        var summary = parsed
        summary.imported = written.written
        summary.unchanged = written.unchanged
        summary.seconds = (ContinuousClock.now - started).seconds
        summary.writeSeconds = writeTime.seconds
        return summary
    }

    enum Outcome: Sendable {
        case parsed(API.ImportSummary)
        case written(WriteSummary, Duration)
    }

    /// The parsing stage: rows become prepared writes in batches of `batchSize`; bad rows become rejections.
    func parse<Body: AsyncSequence>(
        _ body: Body, send: (Chunk) async -> Void
    ) async throws -> API.ImportSummary where Body.Element == ByteBuffer {
        var summary = API.ImportSummary()
        var batch: [RecordInput] = []
        batch.reserveCapacity(Self.batchSize)
        var csv = CSVParser()
        var mapper: CSVRowMapper?
        var lines = JSONLines()
        var hasher = SHA256()
        var chunkLines: ClosedRange<Int>?
        func saw(_ line: Int) { chunkLines = chunkLines.map { min($0.lowerBound, line)...max($0.upperBound, line) } ?? line...line }

        func reject(_ line: Int, _ reason: String) {
            summary.rejected += 1
            if summary.rejections.count < Self.maxListedRejections {
                // A reason may quote the row (an unknown field name of up to a line's length): a
                // thousand listed reasons stay small however long the rows are.
                let shown = reason.count > Self.maxReasonLength ? String(reason.prefix(Self.maxReasonLength)) + "…" : reason
                summary.rejections.append(API.Rejection(line: line, reason: shown))
            } else {
                summary.rejectionsTruncated = true
            }
        }

        func flush() async {
            guard !batch.isEmpty, let range = chunkLines else { return }
            await send(Chunk(writes: store.prepare(batch, schema: schema, physicalMillis: physicalMillis()), lines: range))
            batch.removeAll(keepingCapacity: true)
            chunkLines = nil
        }

        func take(csvRow row: CSVParser.Row) throws {
            guard let m = mapper else {
                // The header decides the column mapping; a bad header stops the import before any write.
                if let e = row.error { throw CityMeshError(.malformedInput, "the header row (line \(row.line)) is malformed: \(e)") }
                mapper = try CSVRowMapper(header: row.fields, schema: schema)
                return
            }
            if let e = row.error { return reject(row.line, e) }
            do {
                batch.append(try m.map(row.fields))
                saw(row.line)
            } catch let e as CityMeshError { reject(row.line, e.message) }
        }

        func take(jsonLine line: Int, bytes: [UInt8]?) {
            do {
                guard let bytes else {
                    throw CityMeshError(.valueTooLarge, "line is longer than \(JSONLines.maxLineBytes) bytes")
                }
                guard String(validating: bytes, as: UTF8.self) != nil else {
                    throw CityMeshError(.invalidUTF8, "invalid UTF-8: save the file as UTF-8")
                }
                let object: [String: JSONValue]
                do { object = try JSONDecoder().decode([String: JSONValue].self, from: Data(bytes)) } catch {
                    throw CityMeshError(.malformedInput, "not a JSON object: write one {\"field\": value, …} per line")
                }
                batch.append(try RecordInput.fromJSON(object, key: nil, schema: schema))
                saw(line)
            } catch let e as CityMeshError {
                reject(line, e.message)
            } catch {
                reject(line, "\(error)")
            }
        }

        for try await buffer in body {
            summary.bytes += buffer.readableBytes
            try buffer.withUnsafeReadableBytes { raw in
                hasher.update(bufferPointer: raw)
                switch format {
                case .csv:
                    try csv.feed(raw) { try take(csvRow: $0) }
                case .jsonl:
                    lines.feed(raw) { take(jsonLine: $0, bytes: $1) }
                }
            }
            if batch.count >= Self.batchSize { await flush() }
        }
        switch format {
        case .csv:
            try csv.finish { try take(csvRow: $0) }
            if mapper == nil { throw CityMeshError(.malformedInput, "the CSV file is empty: it needs a header row naming the fields") }
        case .jsonl:
            lines.finish { take(jsonLine: $0, bytes: $1) }
        }
        await flush()
        summary.contentSHA256 = Hex.lower(hasher.finalize())
        return summary
    }
}

/// Splits a byte stream into lines (LF or CRLF), bounded in length; blank lines are skipped.
struct JSONLines {
    static let maxLineBytes = 1 << 20
    private var buffer: [UInt8] = []
    private var line = 1
    private var overflow = false

    mutating func feed(_ bytes: UnsafeRawBufferPointer, _ emit: (Int, [UInt8]?) -> Void) {
        for b in bytes {
            if b == UInt8(ascii: "\n") {
                end(emit)
            } else if buffer.count < Self.maxLineBytes {
                buffer.append(b)
            } else {
                overflow = true
            }
        }
    }

    mutating func finish(_ emit: (Int, [UInt8]?) -> Void) {
        if !buffer.isEmpty { end(emit) }
    }

    private mutating func end(_ emit: (Int, [UInt8]?) -> Void) {
        if buffer.last == UInt8(ascii: "\r") { buffer.removeLast() }
        if overflow {
            emit(line, nil)
        } else if !buffer.allSatisfy({ $0 == 32 || $0 == 9 }) {
            emit(line, buffer)
        }
        buffer.removeAll(keepingCapacity: true)
        overflow = false
        line += 1
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
