/// RFC 3339 timestamps to and from microseconds since the Unix epoch.
///
/// Hand-written because imports parse millions of them and Foundation's formatters allocate per call;
/// the grammar is RFC 3339 §5.6 (`T`, `t` or a space between date and time, `Z` or a numeric offset).
public enum RFC3339 {
    public static func parse(_ text: String) -> Int64? {
        var text = text
        guard text.utf8.count >= 20 else { return nil }
        return text.withUTF8 { b -> Int64? in
            func digits(_ from: Int, _ count: Int) -> Int? {
                var v = 0
                for i in from..<(from + count) {
                    let c = b[i]
                    guard c >= 48 && c <= 57 else { return nil }
                    v = v * 10 + Int(c - 48)
                }
                return v
            }
            guard let year = digits(0, 4), b[4] == 45, let month = digits(5, 2), b[7] == 45, let day = digits(8, 2),
                b[10] == 84 || b[10] == 116 || b[10] == 32,
                let hour = digits(11, 2), b[13] == 58, let minute = digits(14, 2), b[16] == 58, let second = digits(17, 2)
            else { return nil }
            guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour <= 23, minute <= 59,
                second <= 60
            else { return nil }
            var i = 19
            var micros = 0
            if b[i] == 46 {  // '.'
                i += 1
                var n = 0
                while i < b.count, b[i] >= 48, b[i] <= 57 {
                    if n < 6 { micros = micros * 10 + Int(b[i] - 48) }
                    n += 1
                    i += 1
                }
                guard n > 0 else { return nil }
                // Digits past the sixth are read and dropped (microsecond precision). The loop is a
                // `while`, not `n..<6`, which would trap building a range from 7 or more digits.
                while n < 6 {
                    micros *= 10
                    n += 1
                }
            }
            guard i < b.count else { return nil }
            var offsetSeconds = 0
            if b[i] == 90 || b[i] == 122 {  // Z z
                i += 1
            } else if b[i] == 43 || b[i] == 45 {  // + -
                let sign = b[i] == 45 ? -1 : 1
                guard i + 6 == b.count, let oh = digits(i + 1, 2), b[i + 3] == 58, let om = digits(i + 4, 2), oh <= 23, om <= 59
                else { return nil }
                offsetSeconds = sign * (oh * 3600 + om * 60)
                i += 6
            } else {
                return nil
            }
            guard i == b.count else { return nil }
            let days = daysFromCivil(year: year, month: month, day: day)
            let secs = days * 86_400 + hour * 3600 + minute * 60 + min(second, 59) - offsetSeconds
            return Int64(secs) * 1_000_000 + Int64(micros)
        }
    }

    public static func format(microseconds t: Int64) -> String {
        var secs = t / 1_000_000
        var micros = t % 1_000_000
        if micros < 0 {
            micros += 1_000_000
            secs -= 1
        }
        var days = secs / 86_400
        var rem = secs % 86_400
        if rem < 0 {
            rem += 86_400
            days -= 1
        }
        let (y, m, d) = civilFromDays(Int(days))
        func pad(_ v: Int, _ w: Int) -> String {
            let s = String(v)
            return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
        }
        var out = "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(Int(rem / 3600), 2)):\(pad(Int(rem % 3600 / 60), 2)):\(pad(Int(rem % 60), 2))"
        if micros != 0 {
            var frac = pad(Int(micros), 6)
            while frac.hasSuffix("0") { frac.removeLast() }
            out += "." + frac
        }
        return out + "Z"
    }

    static func isLeap(_ y: Int) -> Bool { (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    // Howard Hinnant's days_from_civil / civil_from_days (public-domain algorithms).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
