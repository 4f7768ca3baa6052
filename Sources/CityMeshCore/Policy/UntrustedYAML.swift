public import Yams

/// Checks a composed YAML document (a policy or a config file) before anything reads it.
///
/// Policies and configs arrive from admins' editors, the console and the disk: none of them is
/// trusted to be small or sane. YAML has three features such a file never needs and an attacker
/// would use: anchors and aliases (one alias repeated N times makes the reader walk the same
/// subtree N times — "billion laughs" once anything expands it), mapping keys that are not
/// scalars (Yams force-unwraps a string key when it builds a dictionary), and YAML 1.1's base-60
/// integers (`1:2:3:4:5:6:7:8:9:10:11` overflows inside Yams). Each is refused with its line.
public enum UntrustedYAML {
    /// Most nodes (scalars, lists, mappings) a document may hold; a policy of a thousand shares
    /// with fifty fields each stays far below it.
    public static let maxNodes = 200_000
    /// Most items of one list or mapping.
    public static let maxItems = 10_000

    public struct Problem: Error, Sendable, Equatable {
        public var line: Int
        public var column: Int
        public var message: String
    }

    /// Composes the first document of `text` and checks it: throws `YamlError` for YAML that does
    /// not parse and `Problem` for what is refused here.
    public static func compose(_ text: String) throws -> Node? {
        // Yams holds a node's anchor weakly, owned by its parser: the parser must live while the
        // tree is checked, or every anchor reads as nil.
        let parser = try Parser(yaml: text)
        return try withExtendedLifetime(parser) {
            guard let root = try parser.singleRoot() else { return nil }
            if let problem = problem(in: root) { throw problem }
            return root
        }
    }

    /// The first problem in `root`, if any (anchors are seen only while its parser lives).
    static func problem(in root: Node) -> Problem? {
        var count = 0
        var stack: [Node] = [root]
        while let node = stack.popLast() {
            count += 1
            func at(_ message: String) -> Problem {
                Problem(line: node.mark?.line ?? 1, column: node.mark?.column ?? 1, message: message)
            }
            guard count <= maxNodes else { return at("the document has more than \(maxNodes) values: split it or remove repetition") }
            if node.anchor != nil {
                return at("anchors and aliases (&name, *name) are not accepted here: write each value out")
            }
            switch node {
            case .alias:
                return at("anchors and aliases (&name, *name) are not accepted here: write each value out")
            case .scalar(let s):
                if s.style == .plain, s.string.contains(":"), node.tag == Tag(.int) || node.tag == Tag(.float) {
                    return at("'\(s.string.prefix(40))' reads as a base-60 number in YAML 1.1: put it in quotes")
                }
            case .sequence(let seq):
                guard seq.count <= maxItems else { return at("a list of \(seq.count) items: at most \(maxItems)") }
                stack.append(contentsOf: seq)
            case .mapping(let map):
                guard map.count <= maxItems else { return at("a mapping of \(map.count) keys: at most \(maxItems)") }
                for (key, value) in map {
                    guard case .scalar = key else {
                        return Problem(line: key.mark?.line ?? 1, column: key.mark?.column ?? 1, message: "a key must be a plain name, not a list or mapping")
                    }
                    stack.append(key)
                    stack.append(value)
                }
            }
        }
        return nil
    }
}
