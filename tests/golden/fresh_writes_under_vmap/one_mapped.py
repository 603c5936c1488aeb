def one(i, j, z, tau):
    n = z.shape[0]
    neg = torch.zeros(n, dtype=z.dtype)
    if isinstance(z, torch.Tensor) and n <= z.shape[0] and isinstance(neg, torch.Tensor) and _apart(neg, (n, z)) and isinstance(n, int) and (n > 0) and (sim is _sim_inlined) and (not _rounds_gradients(z, tau)):
        'optimize_loss: loop at line 63 vectorized'
        if not isinstance(i, torch.Tensor) and (not (isinstance(z[i], torch.Tensor) and z[i].requires_grad)) and (not isinstance(z[i], torch.Tensor) or (z.dim() >= 2 and z.dim() >= z[i].dim() + 1)) and (z.dim() >= 2) and (not (isinstance(tau, torch.Tensor) and tau.requires_grad)) and (z.dim() == 2) and (not isinstance(tau, torch.Tensor)) and (2 == z.dim()) and (neg.dim() > 0 and 0 <= n <= neg.shape[0]) and (neg.dim() == 1):
            k = torch.arange(0, n, 1, device=z.device)
            _z_row = z if n == z.shape[0] else z[0:n:1]
            _cond = torch.ne(k != i, False)
            _sim_u = z[i]
            _sim_v = torch.where(_cond.reshape(_cond.shape[:1] + _branch_shape[_cond.shape[1:], _z_row.shape[1:]]), _z_row, False)
            _sim = _broadcast_cosine_similarity(_sim_u, _sim_v, dim=1)
            _neg_item = torch.where(_cond, torch.exp(torch.where(_cond, _sim / _masked_divisor(_cond, _sim, tau), 0)), neg[0:n:1].clone())
            _outs = (_neg_item,)
        else:

            def _body(k, _z_row):
                _cond = torch.ne(k != i, False)
                _sim_u = _fixed_operand(_cond, z[i])
                _sim_v = torch.where(_cond.reshape(_branch_shape[_cond.shape, _z_row.shape]), _z_row, False)
                _sim = _cosine_similarity(_sim_u, _sim_v, dim=0)
                _neg_item = torch.where(_cond, torch.exp(torch.where(_cond, _sim / _masked_divisor(_cond, _sim, _fixed_operand(_cond, tau)), 0)), neg[k])
                return (torch.as_tensor(_neg_item),)
            _outs = _map_in_chunks(_body, in_dims=(0, 0))(torch.arange(0, n, 1, device=z.device), z if n == z.shape[0] else z[0:n:1])
        _neg_at = torch.arange(neg.numel(), device=neg.device).view(neg.shape)[0:n:1]
        neg = neg.flatten().scatter(0, _neg_at.flatten(), torch.as_tensor(_outs[0].reshape(_outs[0].shape[:1] + (1,) * (neg.dim() - 0 - _outs[0].dim()) + _outs[0].shape[1:]).to(neg.dtype if _outs[0].dim() == 1 else _outs[0].dtype), dtype=neg.dtype, device=neg.device).expand(_neg_at.shape).flatten()).view(neg.shape)
    else:
        for k in range(n):
            if k != i:
                _neg_at_1 = torch.arange(neg.numel(), device=neg.device).view(neg.shape)[k]
                neg = neg.flatten().scatter(0, _neg_at_1.flatten(), torch.as_tensor(torch.exp(_sim_1(z[i], z[k]) / tau), dtype=neg.dtype, device=neg.device).expand(_neg_at_1.shape).flatten()).view(neg.shape)
    return -torch.log(torch.exp(_sim_1(z[i], z[j]) / tau) / neg.sum())