public import X509
import SwiftASN1

/// Reading the PEM files that OpenSSL and CityMesh write.
public enum PEM {
    /// Splits a PEM file into its `-----BEGIN X-----` blocks.
    public static func blocks(_ text: String) -> [(label: String, pem: String)] {
        var out: [(String, String)] = []
        var current: [String] = []
        var label: String?
        for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let trimmed = line.trimmingCharacters(in: " \r\t")
            if trimmed.hasPrefix("-----BEGIN "), trimmed.hasSuffix("-----") {
                label = String(trimmed.dropFirst(11).dropLast(5))
                current = [trimmed]
            } else if trimmed.hasPrefix("-----END "), let l = label {
                current.append(trimmed)
                out.append((l, current.joined(separator: "\n") + "\n"))
                label = nil
                current = []
            } else if label != nil {
                current.append(trimmed)
            }
        }
        return out
    }

    /// All certificates in a PEM file, in order.
    public static func certificates(_ text: String, what: String) throws -> [Certificate] {
        let certs = try blocks(text).filter { $0.label == "CERTIFICATE" }.map { block in
            do { return try Certificate(pemEncoded: block.pem) } catch {
                throw CityMeshError(.certificateInvalid, "\(what) holds a CERTIFICATE block that is not a valid X.509 certificate: \(error)")
            }
        }
        guard !certs.isEmpty else {
            throw CityMeshError(.certificateInvalid, "\(what) holds no PEM certificate: expected a '-----BEGIN CERTIFICATE-----' block")
        }
        return certs
    }

    /// The private key in a PEM file (PKCS#8 or SEC1; an `EC PARAMETERS` block before it is skipped).
    public static func privateKey(_ text: String, what: String) throws -> Certificate.PrivateKey {
        guard let block = blocks(text).first(where: { $0.label.hasSuffix("PRIVATE KEY") }) else {
            throw CityMeshError(.keyInvalid, "\(what) holds no PEM private key: expected a '-----BEGIN PRIVATE KEY-----' block")
        }
        do {
            return try Certificate.PrivateKey(pemEncoded: block.pem)
        } catch {
            throw CityMeshError(.keyInvalid, "\(what) is not a usable private key (Ed25519 or ECDSA P-256 expected): \(error)")
        }
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        var s = self
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
