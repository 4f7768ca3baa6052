/// The row-filter language of shares: comparisons, `in`, null tests, `and` / `or` / `not` and
/// parentheses over a dataset's typed fields. It has no functions, no variables and no loops:
/// a filter is parsed once, type-checked against the schema, and evaluated in time linear in
/// its size (both bounded below). Nothing in it can execute anything.
///
/// ```
/// district != 'Restricted' and pm25 >= 0
/// status in ('active', 'suspended') or (registered_at < '2020-01-01' and capital is not null)
/// ```
public enum Predicate {
    /// Longest filter accepted, in bytes.
    public static let maxLength = 4_096
    /// Deepest nesting of parentheses and `not`.
    public static let maxDepth = 32
    /// Most values in one `in ( … )` list.
    public static let maxListItems = 1_000
    /// Most conditions (comparisons, null tests, `in` lists, bool fields) in one filter.
    public static let maxConditions = 256

    public enum CompareOp: String, Sendable, Equatable, CaseIterable {
        case eq = "=", ne = "!=", lt = "<", le = "<=", gt = ">", ge = ">="
    }

    /// A literal as written, before the schema says what type it must be.
    public enum Literal: Sendable, Equatable {
        case string(String)
        case number(String)
        case bool(Bool)
    }

    /// The syntax tree; `at` is the 0-based character offset in the filter text.
    public indirect enum Node: Sendable, Equatable {
        case and(Node, Node)
        case or(Node, Node)
        case not(Node)
        case compare(field: String, at: Int, CompareOp, Literal, literalAt: Int)
        case isNull(field: String, at: Int, negated: Bool)
        case inList(field: String, at: Int, [(Literal, Int)], negated: Bool)
        /// A bool field on its own.
        case field(String, at: Int)
        case constant(Bool)

        public static func == (l: Node, r: Node) -> Bool {
            switch (l, r) {
            case (.and(let a, let b), .and(let c, let d)), (.or(let a, let b), .or(let c, let d)): a == c && b == d
            case (.not(let a), .not(let b)): a == b
            case (.compare(let f, let p, let o, let v, let q), .compare(let g, let r, let o2, let w, let s)): f == g && p == r && o == o2 && v == w && q == s
            case (.isNull(let f, let p, let n), .isNull(let g, let q, let m)): f == g && p == q && n == m
            case (.inList(let f, let p, let a, let n), .inList(let g, let q, let b, let m)):
                f == g && p == q && n == m && a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            case (.field(let f, let p), .field(let g, let q)): f == g && p == q
            case (.constant(let a), .constant(let b)): a == b
            default: false
            }
        }
    }

    /// A filter that does not parse or type-check: where, what, and what to write instead.
    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// 0-based character offset in the filter text.
        public let offset: Int
        public let message: String
        public init(_ offset: Int, _ message: String) {
            self.offset = offset
            self.message = message
        }
        public var description: String { "column \(offset + 1): \(message)" }
    }

    // MARK: Lexing

    enum Token: Equatable {
        case ident(String), string(String), number(String), op(String), lparen, rparen, comma, end
    }

    static func tokenize(_ text: String) throws(Failure) -> [(Token, Int)] {
        guard text.utf8.count <= maxLength else { throw Failure(0, "the filter is \(text.utf8.count) bytes; at most \(maxLength) are allowed") }
        let chars = Array(text)
        var out: [(Token, Int)] = []
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c.isWhitespace { i += 1; continue }
            let start = i
            if c == "(" { out.append((.lparen, i)); i += 1; continue }
            if c == ")" { out.append((.rparen, i)); i += 1; continue }
            if c == "," { out.append((.comma, i)); i += 1; continue }
            if c == "'" || c == "\"" {
                var s = ""
                i += 1
                var closed = false
                while i < chars.count {
                    if chars[i] == c {
                        // A doubled quote is one quote character, as in SQL.
                        if i + 1 < chars.count, chars[i + 1] == c { s.append(c); i += 2; continue }
                        closed = true
                        i += 1
                        break
                    }
                    s.append(chars[i])
                    i += 1
                }
                guard closed else { throw Failure(start, "this text has no closing \(c): end it with \(c)") }
                out.append((.string(s), start))
                continue
            }
            if c.isNumber || ((c == "-" || c == "+") && i + 1 < chars.count && (chars[i + 1].isNumber || chars[i + 1] == ".")) || (c == "." && i + 1 < chars.count && chars[i + 1].isNumber) {
                var s = String(c)
                i += 1
                while i < chars.count, chars[i].isNumber || chars[i] == "." || chars[i] == "e" || chars[i] == "E"
                    || ((chars[i] == "-" || chars[i] == "+") && (chars[i - 1] == "e" || chars[i - 1] == "E"))
                {
                    s.append(chars[i])
                    i += 1
                }
                out.append((.number(s), start))
                continue
            }
            if c.isLetter || c == "_" {
                var s = ""
                while i < chars.count, chars[i].isLetter || chars[i].isNumber || chars[i] == "_" {
                    s.append(chars[i])
                    i += 1
                }
                out.append((.ident(s), start))
                continue
            }
            for op in ["<=", ">=", "!=", "<>", "==", "=", "<", ">"] {
                if chars[i...].starts(with: op) {
                    out.append((.op(op == "<>" ? "!=" : op == "==" ? "=" : op), start))
                    i += op.count
                    break
                }
            }
            if i == start {
                throw Failure(start, "'\(c)' is not part of the filter language: compare fields with = != < <= > >=, combine with and / or / not")
            }
        }
        out.append((.end, chars.count))
        return out
    }

    // MARK: Parsing

    static let keywords: Set<String> = ["and", "or", "not", "in", "is", "null", "true", "false"]

    struct Parser {
        var tokens: [(Token, Int)]
        var i = 0
        var depth = 0
        var conditions = 0

        var token: Token { tokens[i].0 }
        var at: Int { tokens[i].1 }
        func isWord(_ w: String) -> Bool { if case .ident(let s) = token { return s.lowercased() == w } else { return false } }
        mutating func next() { if i < tokens.count - 1 { i += 1 } }

        mutating func parseOr() throws(Failure) -> Node {
            var left = try parseAnd()
            while isWord("or") {
                next()
                left = .or(left, try parseAnd())
            }
            return left
        }

        mutating func parseAnd() throws(Failure) -> Node {
            var left = try parseNot()
            while isWord("and") {
                next()
                left = .and(left, try parseNot())
            }
            return left
        }

        mutating func enter() throws(Failure) {
            depth += 1
            guard depth <= Predicate.maxDepth else { throw Failure(at, "the filter nests deeper than \(Predicate.maxDepth) levels: simplify it") }
        }

        mutating func parseNot() throws(Failure) -> Node {
            if isWord("not") {
                try enter()
                next()
                let inner = try parseNot()
                depth -= 1
                return .not(inner)
            }
            return try parseComparison()
        }

        mutating func literal() throws(Failure) -> (Literal, Int) {
            let p = at
            switch token {
            case .string(let s): next(); return (.string(s), p)
            case .number(let n): next(); return (.number(n), p)
            case .ident(let w) where w.lowercased() == "true": next(); return (.bool(true), p)
            case .ident(let w) where w.lowercased() == "false": next(); return (.bool(false), p)
            case .ident(let w) where w.lowercased() == "null":
                throw Failure(p, "null is not a value to compare with: write 'FIELD is null' or 'FIELD is not null'")
            case .ident(let w): throw Failure(p, "expected a value ('text', a number, true or false) but found '\(w)': quote text in single quotes")
            default: throw Failure(p, "expected a value ('text', a number, true or false) here")
            }
        }

        mutating func parseComparison() throws(Failure) -> Node {
            let p = at
            if token != .lparen {
                conditions += 1
                guard conditions <= Predicate.maxConditions else { throw Failure(p, "a filter has at most \(Predicate.maxConditions) conditions: simplify it, e.g. with 'in (…)'") }
            }
            switch token {
            case .lparen:
                try enter()
                next()
                let inner = try parseOr()
                guard token == .rparen else { throw Failure(at, "expected ')' to close the '(' at column \(p + 1)") }
                next()
                depth -= 1
                return inner
            case .ident(let w) where w.lowercased() == "true" || w.lowercased() == "false":
                next()
                return .constant(w.lowercased() == "true")
            case .ident(let name) where !Predicate.keywords.contains(name.lowercased()):
                next()
                if case .op(let o) = token {
                    let op = CompareOp(rawValue: o)!  // the lexer only makes these
                    next()
                    if case .ident(let other) = token, !Predicate.keywords.contains(other.lowercased()) {
                        throw Failure(at, "'\(other)' is not a value: quote text in single quotes ('\(other)'); a filter compares a field with a value, not with another field")
                    }
                    let (value, vp) = try literal()
                    return .compare(field: name, at: p, op, value, literalAt: vp)
                }
                if isWord("is") {
                    next()
                    var negated = false
                    if isWord("not") { negated = true; next() }
                    guard isWord("null") else { throw Failure(at, "expected 'null' after 'is\(negated ? " not" : "")'") }
                    next()
                    return .isNull(field: name, at: p, negated: negated)
                }
                var negated = false
                if isWord("not") {
                    negated = true
                    next()
                    guard isWord("in") else { throw Failure(at, "expected 'in' after '\(name) not'") }
                }
                if isWord("in") {
                    next()
                    guard token == .lparen else { throw Failure(at, "expected '(' after 'in': write \(name) in ('a', 'b')") }
                    next()
                    var items: [(Literal, Int)] = []
                    while true {
                        items.append(try literal())
                        guard items.count <= Predicate.maxListItems else { throw Failure(at, "an 'in' list has at most \(Predicate.maxListItems) values") }
                        if token == .comma { next(); continue }
                        guard token == .rparen else { throw Failure(at, "expected ',' or ')' in the 'in' list") }
                        next()
                        break
                    }
                    return .inList(field: name, at: p, items, negated: negated)
                }
                return .field(name, at: p)
            case .ident(let w):
                throw Failure(p, "expected a field name but found the word '\(w)'")
            case .end:
                throw Failure(p, "the filter ends too early: expected a field name, '(' or 'not'")
            case .string, .number:
                throw Failure(p, "a filter starts each comparison with a field name: write FIELD = value")
            default:
                throw Failure(p, "expected a field name, '(' or 'not' here")
            }
        }
    }

    /// Parses a filter into its syntax tree.
    public static func parse(_ text: String) throws(Failure) -> Node {
        var parser = Parser(tokens: try tokenize(text))
        if parser.token == .end { throw Failure(0, "the filter is empty: leave 'where' out to share every row") }
        let node = try parser.parseOr()
        guard parser.token == .end else {
            throw Failure(parser.at, "unexpected text here: join conditions with 'and' or 'or'")
        }
        return node
    }
}

/// A filter checked against a dataset's schema, ready to evaluate.
public struct RowFilter: Sendable, Equatable {
    public indirect enum Checked: Sendable, Equatable {
        case and(Checked, Checked)
        case or(Checked, Checked)
        case not(Checked)
        case compare(field: String, Predicate.CompareOp, Value)
        case isNull(field: String, negated: Bool)
        case inList(field: String, Set<Value>, negated: Bool)
        case field(String)
        case constant(Bool)
    }

    public let text: String
    public let root: Checked
    /// The fields the filter reads.
    public let fields: Set<String>

    /// Parses `text` and checks every field and value against `schema`.
    public init(_ text: String, schema: Schema) throws(Predicate.Failure) {
        self.text = text
        var used: Set<String> = []
        root = try Self.check(try Predicate.parse(text), schema, &used)
        fields = used
    }

    static func field(_ name: String, _ at: Int, _ schema: Schema, _ used: inout Set<String>) throws(Predicate.Failure) -> Schema.Field {
        guard let f = schema.field(named: name) else {
            let names = schema.fields.map(\.name)
            let hint = Spelling.nearest(name, in: names, within: 2).map { "did you mean '\($0)'? " } ?? ""
            throw Predicate.Failure(at, "the dataset has no field '\(name)': \(hint)its fields are \(names.joined(separator: ", "))")
        }
        used.insert(name)
        return f
    }

    static func value(_ literal: Predicate.Literal, _ at: Int, for f: Schema.Field) throws(Predicate.Failure) -> Value {
        switch (literal, f.type) {
        case (.string(let s), .string): return .string(s)
        case (.string(let s), .timestamp):
            let date = s.utf8.count == 10 ? RFC3339.parse(s + "T00:00:00Z") : nil
            guard let t = date ?? RFC3339.parse(s) else {
                throw Predicate.Failure(at, "'\(s)' is not a time for the timestamp field '\(f.name)': write '2026-11-01' or '2026-11-01T08:00:00Z'")
            }
            return .timestamp(t)
        case (.number(let n), .int):
            guard let i = Int64(n) else { throw Predicate.Failure(at, "'\(n)' is not an integer for the int field '\(f.name)'") }
            return .int(i)
        case (.number(let n), .double):
            guard let d = Double(n), d.isFinite else { throw Predicate.Failure(at, "'\(n)' is not a number for the double field '\(f.name)'") }
            return .double(d)
        case (.bool(let b), .bool): return .bool(b)
        default:
            let written: String
            switch literal {
            case .string(let s): written = "the text '\(s)'"
            case .number(let n): written = "the number \(n)"
            case .bool(let b): written = "\(b)"
            }
            let example = switch f.type {
            case .string: "'text'"
            case .int: "42"
            case .double: "4.2"
            case .bool: "true"
            case .timestamp: "'2026-11-01'"
            }
            throw Predicate.Failure(at, "'\(f.name)' is a \(f.type.rawValue) field and cannot be compared with \(written): write a \(f.type.rawValue) such as \(example)")
        }
    }

    static func check(_ node: Predicate.Node, _ schema: Schema, _ used: inout Set<String>) throws(Predicate.Failure) -> Checked {
        switch node {
        case .and(let a, let b): return .and(try check(a, schema, &used), try check(b, schema, &used))
        case .or(let a, let b): return .or(try check(a, schema, &used), try check(b, schema, &used))
        case .not(let a): return .not(try check(a, schema, &used))
        case .constant(let b): return .constant(b)
        case .field(let name, let at):
            let f = try field(name, at, schema, &used)
            guard f.type == .bool else {
                throw Predicate.Failure(at, "'\(name)' is a \(f.type.rawValue) field, not a condition: compare it, e.g. \(name) = …")
            }
            return .field(name)
        case .isNull(let name, let at, let negated):
            _ = try field(name, at, schema, &used)
            return .isNull(field: name, negated: negated)
        case .compare(let name, let at, let op, let literal, let literalAt):
            let f = try field(name, at, schema, &used)
            if f.type == .bool, op != .eq, op != .ne {
                throw Predicate.Failure(at, "'\(name)' is a bool field: compare it with = or != only")
            }
            return .compare(field: name, op, try value(literal, literalAt, for: f))
        case .inList(let name, let at, let items, let negated):
            let f = try field(name, at, schema, &used)
            var values: Set<Value> = []
            for (literal, p) in items { values.insert(try value(literal, p, for: f)) }
            return .inList(field: name, values, negated: negated)
        }
    }

    /// Whether a row passes. Three-valued, as in SQL: a comparison with a null field is unknown,
    /// `not` of unknown is unknown, and only rows that are definitely true pass.
    public func matches(_ value: (String) -> Value?) -> Bool {
        Self.eval(root, value) == true
    }

    static func eval(_ c: Checked, _ value: (String) -> Value?) -> Bool? {
        switch c {
        case .constant(let b): return b
        case .field(let name):
            guard case .bool(let b)? = value(name) else { return nil }
            return b
        case .isNull(let name, let negated): return (value(name) == nil) != negated
        case .not(let a): return eval(a, value).map { !$0 }
        case .and(let a, let b):
            let l = eval(a, value)
            if l == false { return false }
            let r = eval(b, value)
            if r == false { return false }
            return l == true && r == true ? true : nil
        case .or(let a, let b):
            let l = eval(a, value)
            if l == true { return true }
            let r = eval(b, value)
            if r == true { return true }
            return l == false && r == false ? false : nil
        case .inList(let name, let set, let negated):
            guard let v = value(name) else { return nil }
            return set.contains(v) != negated
        case .compare(let name, let op, let rhs):
            guard let lhs = value(name), let order = Self.compare(lhs, rhs) else { return nil }
            switch op {
            case .eq: return order == 0
            case .ne: return order != 0
            case .lt: return order < 0
            case .le: return order <= 0
            case .gt: return order > 0
            case .ge: return order >= 0
            }
        }
    }

    /// -1, 0 or 1; nil when the two values are of different types (a schema change since the check).
    static func compare(_ a: Value, _ b: Value) -> Int? {
        func cmp<T: Comparable>(_ x: T, _ y: T) -> Int { x < y ? -1 : x == y ? 0 : 1 }
        switch (a, b) {
        case (.string(let x), .string(let y)): return cmp(x, y)
        case (.int(let x), .int(let y)): return cmp(x, y)
        case (.double(let x), .double(let y)): return x.isNaN || y.isNaN ? nil : cmp(x, y)
        case (.timestamp(let x), .timestamp(let y)): return cmp(x, y)
        case (.bool(let x), .bool(let y)): return x == y ? 0 : 1
        default: return nil
        }
    }
}
