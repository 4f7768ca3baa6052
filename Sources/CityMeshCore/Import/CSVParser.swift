/// An incremental RFC 4180 CSV parser: feed it byte chunks as they arrive, it emits whole rows.
///
/// Written by hand because imports stream from an HTTP body and no CSV package here parses
/// push-style; it never holds more than one row. Rows carry their starting line number so a
/// rejected row can be reported precisely. A row with a structural problem is emitted with an
/// `error` and the parser carries on with the next row.
public struct CSVParser: Sendable {
    public struct Row: Sendable {
        public let line: Int
        public let fields: [String]
        public let error: String?
    }

    /// Rows longer than this are rejected (and skipped) instead of buffered.
    public static let maxRowBytes = 1 << 20

    private enum State: Sendable { case fieldStart, unquoted, quoted, quoteInQuoted, afterCR }

    private var state: State = .fieldStart
    private var field: [UInt8] = []
    private var fields: [String] = []
    private var line = 1
    private var rowStartLine = 1
    private var rowBytes = 0
    private var rowError: String?
    private var sawAnyByte = false
    private var quoteStartLine = 0
    private var atRowStart = true

    public init() { field.reserveCapacity(256) }

    public mutating func feed<C: Collection>(_ bytes: C, emit: (Row) throws -> Void) rethrows where C.Element == UInt8 {
        for b in bytes {
            try consume(b, emit: emit)
        }
    }

    /// Ends the input; emits the last row if it had no trailing newline.
    public mutating func finish(emit: (Row) throws -> Void) rethrows {
        switch state {
        case .quoted:
            rowError = rowError ?? "unterminated quoted field starting on line \(quoteStartLine): close it with a double quote"
            try endRow(emit: emit)
        case .afterCR:
            state = .fieldStart
        default:
            if !atRowStart { try endRow(emit: emit) }
        }
    }

    @inline(__always)
    private mutating func consume(_ b: UInt8, emit: (Row) throws -> Void) rethrows {
        if !sawAnyByte {
            sawAnyByte = true
            if b == 0xEF { bomProgress = 1; return }
        }
        if bomProgress > 0 {
            if bomProgress == 1 && b == 0xBB { bomProgress = 2; return }
            if bomProgress == 2 && b == 0xBF { bomProgress = 0; return }
            // Not a BOM after all: keep the bytes we skipped.
            let skipped: [UInt8] = bomProgress == 1 ? [0xEF] : [0xEF, 0xBB]
            bomProgress = 0
            for s in skipped { try consume(s, emit: emit) }
        }
        rowBytes += 1
        if rowBytes > Self.maxRowBytes, rowError == nil {
            rowError = "row is longer than \(Self.maxRowBytes) bytes: split it or check for an unclosed quote"
            field.removeAll(keepingCapacity: false)
        }
        atRowStart = false
        switch state {
        case .fieldStart:
            switch b {
            case UInt8(ascii: "\""):
                state = .quoted
                quoteStartLine = line
            case UInt8(ascii: ","): endField()
            case UInt8(ascii: "\n"):
                line += 1
                try endRow(emit: emit)
            case UInt8(ascii: "\r"): state = .afterCR
            default:
                append(b)
                state = .unquoted
            }
        case .unquoted:
            switch b {
            case UInt8(ascii: ","):
                endField()
                state = .fieldStart
            case UInt8(ascii: "\n"):
                line += 1
                try endRow(emit: emit)
            case UInt8(ascii: "\r"): state = .afterCR
            default: append(b)
            }
        case .quoted:
            if b == UInt8(ascii: "\"") {
                state = .quoteInQuoted
            } else {
                if b == UInt8(ascii: "\n") { line += 1 }
                append(b)
            }
        case .quoteInQuoted:
            switch b {
            case UInt8(ascii: "\""):
                append(b)
                state = .quoted
            case UInt8(ascii: ","):
                endField()
                state = .fieldStart
            case UInt8(ascii: "\n"):
                line += 1
                try endRow(emit: emit)
            case UInt8(ascii: "\r"): state = .afterCR
            default:
                if rowError == nil {
                    rowError = "unexpected character after a closing quote in column \(fields.count + 1): double a quote inside a quoted field (\"\")"
                }
                append(b)
                state = .unquoted
            }
        case .afterCR:
            line += 1
            try endRow(emit: emit)
            if b != UInt8(ascii: "\n") {
                rowBytes = 0
                try consume(b, emit: emit)
            }
        }
    }

    private var bomProgress = 0

    @inline(__always)
    private mutating func append(_ b: UInt8) {
        if rowError == nil || rowBytes <= Self.maxRowBytes { field.append(b) }
    }

    private mutating func endField() {
        if let s = String(validating: field, as: UTF8.self) {
            fields.append(s)
        } else {
            if rowError == nil { rowError = "invalid UTF-8 in column \(fields.count + 1): save the file as UTF-8" }
            fields.append("")
        }
        field.removeAll(keepingCapacity: true)
    }

    private mutating func endRow(emit: (Row) throws -> Void) rethrows {
        endField()
        let row = Row(line: rowStartLine, fields: fields, error: rowError)
        fields.removeAll(keepingCapacity: true)
        rowError = nil
        rowBytes = 0
        state = .fieldStart
        atRowStart = true
        rowStartLine = line
        // A blank line is not a row.
        if row.fields.count == 1 && row.fields[0].isEmpty && row.error == nil { return }
        try emit(row)
    }
}
