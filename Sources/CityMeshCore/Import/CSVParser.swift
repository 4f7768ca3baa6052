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
    private var quoteStartLine = 0
    private var atRowStart = true
    /// Bytes of a possible UTF-8 byte order mark seen at the very start.
    private var bomSeen = 0
    private var started = false

    public init() { field.reserveCapacity(256) }

    /// Feeds bytes from any collection (copied once into contiguous memory).
    public mutating func feed<C: Collection>(_ bytes: C, emit: (Row) throws -> Void) rethrows where C.Element == UInt8 {
        let array = Array(bytes)
        try array.withUnsafeBytes { try feed($0, emit: emit) }
    }

    public mutating func feed(_ input: UnsafeRawBufferPointer, emit: (Row) throws -> Void) rethrows {
        var buffer = input
        if !started {
            // Skip a UTF-8 byte order mark, even when it arrives split across chunks.
            let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
            while bomSeen < 3, let b = buffer.first {
                if b == bom[bomSeen] {
                    bomSeen += 1
                    buffer = UnsafeRawBufferPointer(rebasing: buffer.dropFirst())
                } else {
                    started = true
                    let partial = Array(bom.prefix(bomSeen))
                    bomSeen = 3
                    try partial.withUnsafeBytes { try scan($0, emit: emit) }
                    break
                }
            }
            if bomSeen == 3 { started = true }
            if !started { return }
        }
        try scan(buffer, emit: emit)
    }

    /// Ends the input; emits the last row if it had no trailing newline.
    public mutating func finish(emit: (Row) throws -> Void) rethrows {
        if !started && bomSeen > 0 && bomSeen < 3 {
            started = true
            let partial = Array([UInt8]([0xEF, 0xBB, 0xBF]).prefix(bomSeen))
            try partial.withUnsafeBytes { try scan($0, emit: emit) }
        }
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

    private mutating func scan(_ bytes: UnsafeRawBufferPointer, emit: (Row) throws -> Void) rethrows {
        let n = bytes.count
        var i = 0
        while i < n {
            let b = bytes[i]
            switch state {
            case .unquoted, .fieldStart where b != 0x22 && b != 0x2C && b != 0x0A && b != 0x0D:
                // Fast path: copy a run of ordinary bytes in one go.
                var j = i
                while j < n {
                    let c = bytes[j]
                    if c == 0x2C || c == 0x0A || c == 0x0D || (c == 0x22 && state == .fieldStart && j == i) { break }
                    j += 1
                }
                if j > i {
                    append(UnsafeRawBufferPointer(rebasing: bytes[i..<j]))
                    state = .unquoted
                    i = j
                    continue
                }
                try step(b, emit: emit)
                i += 1
            case .quoted where b != 0x22:
                var j = i
                while j < n, bytes[j] != 0x22 {
                    if bytes[j] == 0x0A { line += 1 }
                    j += 1
                }
                append(UnsafeRawBufferPointer(rebasing: bytes[i..<j]))
                i = j
            default:
                try step(b, emit: emit)
                i += 1
            }
        }
    }

    @inline(__always)
    private mutating func step(_ b: UInt8, emit: (Row) throws -> Void) rethrows {
        rowBytes += 1
        atRowStart = false
        switch state {
        case .fieldStart:
            switch b {
            case 0x22:
                state = .quoted
                quoteStartLine = line
            case 0x2C: endField()
            case 0x0A:
                line += 1
                try endRow(emit: emit)
            case 0x0D: state = .afterCR
            default:
                appendByte(b)
                state = .unquoted
            }
        case .unquoted:
            switch b {
            case 0x2C:
                endField()
                state = .fieldStart
            case 0x0A:
                line += 1
                try endRow(emit: emit)
            case 0x0D: state = .afterCR
            default: appendByte(b)
            }
        case .quoted:
            if b == 0x22 {
                state = .quoteInQuoted
            } else {
                if b == 0x0A { line += 1 }
                appendByte(b)
            }
        case .quoteInQuoted:
            switch b {
            case 0x22:
                appendByte(b)
                state = .quoted
            case 0x2C:
                endField()
                state = .fieldStart
            case 0x0A:
                line += 1
                try endRow(emit: emit)
            case 0x0D: state = .afterCR
            default:
                if rowError == nil {
                    rowError = "unexpected character after a closing quote in column \(fields.count + 1): double a quote inside a quoted field (\"\")"
                }
                appendByte(b)
                state = .unquoted
            }
        case .afterCR:
            line += 1
            try endRow(emit: emit)
            if b != 0x0A {
                try step(b, emit: emit)
            }
        }
    }

    @inline(__always)
    private mutating func appendByte(_ b: UInt8) {
        if field.count < Self.maxRowBytes { field.append(b) }
        overLimitCheck()
    }

    @inline(__always)
    private mutating func append(_ run: UnsafeRawBufferPointer) {
        atRowStart = false
        rowBytes += run.count
        if field.count < Self.maxRowBytes { field.append(contentsOf: run) }
        overLimitCheck()
    }

    @inline(__always)
    private mutating func overLimitCheck() {
        if rowBytes > Self.maxRowBytes, rowError == nil {
            rowError = "row is longer than \(Self.maxRowBytes) bytes: split it or check for an unclosed quote"
        }
        if rowError != nil, rowBytes > Self.maxRowBytes { field.removeAll(keepingCapacity: true) }
    }

    private mutating func endField() {
        // A row over the limit is refused whole; its further fields are not kept, so a row of a
        // million commas holds no more memory than one field.
        if rowError != nil, rowBytes > Self.maxRowBytes {
            field.removeAll(keepingCapacity: true)
            return
        }
        var ascii = true
        for b in field where b >= 0x80 {
            ascii = false
            break
        }
        if ascii {
            fields.append(field.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) })
        } else if let s = String(validating: field, as: UTF8.self) {
            fields.append(s)
        } else {
            if rowError == nil { rowError = "invalid UTF-8 in column \(fields.count + 1): save the file as UTF-8" }
            fields.append("")
        }
        field.removeAll(keepingCapacity: true)
    }

    private mutating func endRow(emit: (Row) throws -> Void) rethrows {
        endField()
        let startLine = rowStartLine
        let error = rowError
        rowError = nil
        rowBytes = 0
        state = .fieldStart
        atRowStart = true
        rowStartLine = line
        // A blank line is not a row.
        if !(fields.count == 1 && fields[0].isEmpty && error == nil) {
            // The row lives only for the call, so the field array stays uniquely ours and is
            // reused for the next row instead of reallocated.
            try emit(Row(line: startLine, fields: fields, error: error))
        }
        fields.removeAll(keepingCapacity: true)
    }
}
