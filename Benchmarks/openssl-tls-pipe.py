#!/usr/bin/env python3
"""OpenSSL's own TLS 1.3 throughput over one loopback connection, for comparison with CityMesh.

Python's ssl module is a thin layer over OpenSSL: mutual TLS 1.3 with the same Ed25519
certificates, 64 KiB sendall() calls, the receiver (a separate process, so the two ends do not
share an interpreter lock) counts bytes. Prints MB/s (best of 3).
Usage: openssl-tls-pipe.py PKI_DIR MIB
"""
import multiprocessing, socket, ssl, sys, time

pki, mib = sys.argv[1], int(sys.argv[2])
total = mib * 1048576
chunk = b"\x5a" * 65536

def server_ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.minimum_version = ssl.TLSVersion.TLSv1_3
    c.load_cert_chain(f"{pki}/server.pem", f"{pki}/server.key")
    c.load_verify_locations(f"{pki}/ca.pem")
    c.verify_mode = ssl.CERT_REQUIRED
    return c

def client_ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.minimum_version = ssl.TLSVersion.TLSv1_3
    c.load_cert_chain(f"{pki}/client.pem", f"{pki}/client.key")
    c.load_verify_locations(f"{pki}/ca.pem")
    c.check_hostname = False
    return c

def serve(listener, total):
    conn, _ = listener.accept()
    s = server_ctx().wrap_socket(conn, server_side=True)
    got = 0
    buf = bytearray(262144)
    while got < total:
        n = s.recv_into(buf)
        if not n:
            break
        got += n
    s.sendall(b"k")  # tells the sender everything arrived
    s.close()

def one_round():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    p = multiprocessing.Process(target=serve, args=(listener, total))
    p.start()
    c = client_ctx().wrap_socket(socket.create_connection(("127.0.0.1", port)))
    c.do_handshake()
    start = time.perf_counter()
    for _ in range(total // len(chunk)):
        c.sendall(chunk)
    c.recv(1)
    elapsed = time.perf_counter() - start
    c.close()
    p.join()
    listener.close()
    return mib / elapsed

if __name__ == "__main__":
    best = max(one_round() for _ in range(3))
    print("%-55s %8.0f MB/s  (best of 3, %d MiB each; %s)" % ("OpenSSL TLS 1.3 pipe (Python ssl), 64 KiB writes", best, mib, ssl.OPENSSL_VERSION))
