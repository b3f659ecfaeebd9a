"""Push one spectrum to a sigstream spectral service and print its result.

Needs only pyzmq and msgpack (and the standard library): any language with ZeroMQ and msgpack
can do the same. Usage::

    python docs/examples/client.py tcp://127.0.0.1:5555 tcp://127.0.0.1:5556

(the service's ingest and publish endpoints, as given to ``sigstream run spectral``). Prints the
result's topic, seq and body; exits 1 if the service answers with an error or not at all.
"""

import math
import struct
import sys
import time

import msgpack
import zmq

ingest, publish = sys.argv[1], sys.argv[2]
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB)  # results come back on the publish socket, topic "<kind>/<stream>"
sub.connect(publish)
sub.subscribe(b"result.spectral/client-1")
sub.subscribe(b"error/client-1")
push = ctx.socket(zmq.PUSH)
push.connect(ingest)
time.sleep(0.5)  # let the subscription reach the service before its answer is published

# A spectrum: two peaks on a sloping background, 512 float32 samples, little-endian.
x = [0.1 + 0.0002 * i + 0.8 * math.exp(-(((i - 150) / 4) ** 2))
     + 0.4 * math.exp(-(((i - 340) / 8) ** 2)) for i in range(512)]
header = {"v": 1, "kind": "spectrum", "stream": "client-1", "seq": 0,
          "t_ns": time.time_ns(), "dtype": "float32", "shape": [len(x)]}
push.send_multipart([msgpack.packb(header), struct.pack(f"<{len(x)}f", *x)])

if not sub.poll(30_000):
    sys.exit("no answer within 30 s")
topic, head, body = sub.recv_multipart()
print(topic.decode(), "seq", msgpack.unpackb(head)["seq"], msgpack.unpackb(body))
ctx.destroy(linger=0)
sys.exit(1 if topic.startswith(b"error/") else 0)
