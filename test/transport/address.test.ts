import t from 'tap';
import { Addr, SocketAddr, broadcastAddr } from '../../transport/address.js';
import { AddressError } from '../../transport/errors.js';

t.test('known answers from the wire reference', async (t) => {
  t.equal(new Addr(0, 42).toString(), '0:0000.0000.002A');
  t.equal(new Addr(1, 0x00a3f291).toString(), '1:0001.00A3.F291');
  t.same(Addr.parse('1:0001.00a3.f291'), new Addr(1, 0x00a3f291), 'hex is case-insensitive on parse');
  t.equal(new Addr(1, 0x00a3f291).toBytes().toString('hex'), '000100a3f291');
  t.equal(broadcastAddr(7).toString(), '7:0007.FFFF.FFFF');
  t.ok(broadcastAddr(7).isBroadcast());
  t.ok(Addr.ZERO.isZero());
});

t.test('round trips text and binary', async (t) => {
  for (const [net, node] of [[0, 0], [0, 1], [65535, 0xffffffff], [300, 0x80000000], [1, 0x10000]] as const) {
    const a = new Addr(net, node);
    t.ok(Addr.parse(a.toString()).equals(a), a.toString());
    t.ok(Addr.read(a.toBytes()).equals(a));
  }
  const s = SocketAddr.parse('1:0001.00A3.F291:1001');
  t.equal(s.port, 1001);
  t.equal(s.toString(), '1:0001.00A3.F291:1001');
});

t.test('rejects bad text with typed errors', async (t) => {
  const bad: Array<[string, string]> = [
    ['1:00A3.F291.0004', 'network_mismatch'], // the v1 SPEC's own example is invalid
    ['0:0000.0000', 'invalid_address'],
    ['0:0000.0000.00000', 'invalid_address'],
    ['0:0000.0000.00G0', 'invalid_address'],
    ['70000:1170.0000.0000', 'invalid_address'],
    ['x:0000.0000.0000', 'invalid_address'],
    ['', 'invalid_address'],
    [':0000.0000.0000', 'invalid_address'],
    ['-1:0000.0000.0000', 'invalid_address'],
  ];
  for (const [text, code] of bad) {
    t.throws(() => Addr.parse(text), { code }, JSON.stringify(text));
  }
  t.throws(() => SocketAddr.parse('0:0000.0000.0001:70000'), AddressError);
  t.throws(() => SocketAddr.parse('0:0000.0000.0001'), AddressError);
  t.throws(() => Addr.read(Buffer.alloc(5)), { code: 'short_address' });
  t.throws(() => new Addr(0, -1), { code: 'invalid_node' });
  t.throws(() => new Addr(65536, 0), { code: 'invalid_network' });
});

t.test('loose parsing accepts bare node IDs and addresses, not hostnames', async (t) => {
  t.same(Addr.parseLoose('2'), new Addr(0, 2));
  t.same(Addr.parseLoose('1:0001.0000.0005'), new Addr(1, 5));
  t.equal(Addr.parseLoose('alpha'), null);
  t.equal(Addr.parseLoose('99999999999'), null);
});
