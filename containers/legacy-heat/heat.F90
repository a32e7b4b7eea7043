! heat -- a tiny "legacy" climate code, written the way the codes TAMS users bring are written,
! to show (docs/wrapping.md) how such a code is wrapped.  It knows nothing of TAMS:
!
!   * it reads its own namelist, heat.nml, from the current directory (group &params);
!   * it opens its boundary file by a relative name, forcing.dat (one value per model day);
!   * its time step is short: dt = 1/substeps day (hourly by default);
!   * it steps with leapfrog + a Robert-Asselin filter: TWO time levels per field;
!   * it has two sub-models: the atmosphere (ta) and the soil (ts);
!   * on error it says STOP and exits 0, as Fortran's `stop 'message'` does;
!   * it writes its daily output to heat_daily.txt (day, ta, ts).
!
! The restart patch (the "PATCH" comments): read a restart file restart.in (every prognostic
! field at both time levels, and the model step), write one every restart_every model steps
! and at the end, named rst_<model step>.dat; and the noise-injection patch: add
! perturb_amp * p(day) to ta at the start of each model day, p read from perturb.dat.
!
! Compile with -DONE_TIME_LEVEL for the broken variant of docs/wrapping.md (its restart keeps
! only the current time level): `tams check` must reject it.
program heat
  use, intrinsic :: iso_fortran_env, only: int64, real64
  implicit none
  integer :: substeps = 24, nsteps = 24, restart_every = 24, nforce, u, ios, k
  real(real64) :: lambda_a = 0.3d0, lambda_s = 0.05d0, gamma = 0.1d0, alpha = 0.1d0
  real(real64) :: perturb_amp = 0.0d0, dt
  character(len=256) :: perturb_file = ''
  logical :: have_restart, have_perturb
  integer(int64) :: step, step_start, nbytes, day
  real(real64) :: ta_old, ta_now, ta_new, ts_old, ts_now, ts_new
  real(real64), allocatable :: forcing(:), perturb(:)
  namelist /params/ substeps, nsteps, restart_every, lambda_a, lambda_s, gamma, alpha, &
                  perturb_amp, perturb_file

  open(newunit=u, file='heat.nml', status='old', action='read', iostat=ios)
  if (ios /= 0) stop 'HEAT ERROR: cannot open heat.nml'
  read(u, nml=params, iostat=ios)
  if (ios /= 0) stop 'HEAT ERROR: bad namelist heat.nml'
  close(u)
  if (substeps < 1 .or. nsteps < 1 .or. restart_every < 1) stop 'HEAT ERROR: bad step counts'
  dt = 1.0d0 / substeps

  ! boundary file, by its relative name
  inquire(file='forcing.dat', exist=have_restart, size=nbytes)
  if (.not. have_restart) stop 'HEAT ERROR: forcing.dat not found'
  nforce = int(nbytes / 8)
  allocate(forcing(0:nforce - 1))
  open(newunit=u, file='forcing.dat', access='stream', form='unformatted', status='old')
  read(u) forcing
  close(u)

  ! PATCH (restart): every prognostic field at both time levels, and the model step
  inquire(file='restart.in', exist=have_restart)
  if (have_restart) then
    open(newunit=u, file='restart.in', access='stream', form='unformatted', status='old')
    read(u, iostat=ios) step, ta_old, ta_now, ts_old, ts_now
    if (ios /= 0) stop 'HEAT ERROR: cannot read restart.in'
    close(u)
  else
    step = 0
    ta_now = 0.0d0; ts_now = 0.0d0; ta_old = ta_now; ts_old = ts_now
  end if
  step_start = step

  ! PATCH (noise injection): one perturbation per model day of this run
  have_perturb = len_trim(perturb_file) > 0
  if (have_perturb) then
    allocate(perturb(0:(nsteps + substeps - 1) / substeps - 1))
    open(newunit=u, file=trim(perturb_file), access='stream', form='unformatted', &
         status='old', iostat=ios)
    if (ios /= 0) stop 'HEAT ERROR: cannot open the perturbation file'
    read(u, iostat=ios) perturb
    if (ios /= 0) stop 'HEAT ERROR: perturbation file too short'
    close(u)
  end if

  open(newunit=u, file='heat_daily.txt', status='replace', action='write')
  do k = 1, nsteps
    ! time from the step counter, never accumulated: day = step / substeps
    day = step / substeps
    if (mod(step, int(substeps, int64)) == 0 .and. have_perturb) then
      ta_now = ta_now + perturb_amp * perturb((step - step_start) / substeps)
      ta_old = ta_old + perturb_amp * perturb((step - step_start) / substeps)
    end if
    if (step == 0) then  ! cold start: one forward step
      ta_new = ta_now + dt * tend_a(ta_now, ts_now, forcing(mod(day, int(nforce, int64))))
      ts_new = ts_now + dt * lambda_s * (ta_now - ts_now)
    else
      ta_new = ta_old + 2.0d0 * dt * tend_a(ta_now, ts_now, forcing(mod(day, int(nforce, int64))))
      ts_new = ts_old + 2.0d0 * dt * lambda_s * (ta_now - ts_now)
    end if
    ! Robert-Asselin filter of the current level, then shift the levels
    ta_old = ta_now + alpha * (ta_old - 2.0d0 * ta_now + ta_new)
    ts_old = ts_now + alpha * (ts_old - 2.0d0 * ts_now + ts_new)
    ta_now = ta_new; ts_now = ts_new
    step = step + 1
    if (mod(step, int(substeps, int64)) == 0) then
      write(u, '(I0,2(1X,ES24.16E3))') step / substeps, ta_now, ts_now
    end if
    if (mod(step, int(restart_every, int64)) == 0 .or. k == nsteps) call write_restart()
  end do
  close(u)
  print '(A)', 'HEAT: normal end'

contains

  pure real(real64) function tend_a(ta, ts, f)
    real(real64), intent(in) :: ta, ts, f
    tend_a = -lambda_a * (ta - ts) - gamma * ta + f
  end function

  subroutine write_restart()
    ! PATCH (restart): named by the model step, written at every restart_every steps
    character(len=64) :: name
    integer :: v
    write(name, '(A,I12.12,A)') 'rst_', step, '.dat'
    open(newunit=v, file=trim(name), access='stream', form='unformatted', status='replace')
#ifdef ONE_TIME_LEVEL
    write(v) step, ta_now, ta_now, ts_now, ts_now
#else
    write(v) step, ta_old, ta_now, ts_old, ts_now
#endif
    close(v)
  end subroutine
end program heat
