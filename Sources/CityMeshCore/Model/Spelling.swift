/// "Did you mean": the nearest known word to a misspelt one, for error messages (policy keys and
/// row-filter fields, config keys).
public enum Spelling {
    /// Levenshtein distance: the fewest single-character insertions, deletions and substitutions.
    public static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        var row = Array(0...b.count)
        for i in 1...a.count {
            var prev = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let cur = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
                prev = cur
            }
        }
        return row[b.count]
    }

    /// The candidate nearest to `word`, if it is within `limit` edits.
    public static func nearest(_ word: String, in candidates: [String], within limit: Int) -> String? {
        guard let close = candidates.min(by: { distance($0, word) < distance($1, word) }), distance(close, word) <= limit else { return nil }
        return close
    }
}
