import json, sys
f = sys.argv[1] if len(sys.argv) > 1 else 'results.jsonl'
for l in open(f):
    try: r = json.loads(l)
    except Exception: print(l.strip()[:200]); continue
    if 'error' in r: print('ERR', r['desc'], r['error'][:200]); continue
    d, g = r['desc'], r['reg']
    print(r['stage'], d['radial_basis'], d['cutoff'], d['max_degree'], d['l_weight'], d.get('inner_cutoff',0), d.get('r0','cov'), d.get('radial_shape'), '|', g['solver'], g['prior'], g['prior_order'], g['energy_weight'], g.get('energy_weight_scaling',''), '|', r['n_features'], r['fit_s'], r.get('rank'), '%.1e' % r['alpha'], '| val', r['E_val'], r['F_val'], '| tr', r['E_tr'], r['F_tr'], '| best', min(r['alpha_path'], key=lambda x: x[2]) if r.get('alpha_path') else '')
