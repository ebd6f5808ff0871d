# Posts N signed CartPanda-shaped sales (about 1 KB) to 127.0.0.1:PORT over C keep-alive
# connections, as wharf-bench does; used by callgrind-per-delivery.sh.
#   python3 signed-posts.py PORT N [C]
import hmac, hashlib, http.client, sys, threading, os
N = int(sys.argv[2]); port = int(sys.argv[1]); secret=b"cg-secret"; conns=int(sys.argv[3]) if len(sys.argv)>3 else 4
notes = "x"*600
def worker(w):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(N//conns):
        n=f"{w}_{i}"
        body=('{"id":"evt_cg_%s","type":"sale.approved","data":{"sale_id":"SALE_cg_%s","customer":{"email":"c%s@example.com","name":"John Doe"},"product":{"id":"PROD_1","name":"Product Name","price":99.90},"affiliate":{"code":"AFF123","name":"Affiliate","commission":29.97},"payment":{"method":"credit_card","transaction_id":"TRX_cg_%s","status":"approved"},"created_at":"2024-01-05T10:30:00Z","notes":"%s"}}'%(n,n,n,n,notes)).encode()
        sig=hmac.new(secret, body, hashlib.sha256).hexdigest()
        c.request("POST","/webhook/cartpanda",body,{"Content-Type":"application/json","X-CartPanda-Signature":sig})
        r=c.getresponse(); r.read()
        assert r.status==200, r.status
ts=[threading.Thread(target=worker,args=(w,)) for w in range(conns)]
[t.start() for t in ts]; [t.join() for t in ts]
